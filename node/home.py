"""The node's home directory: identity key, config file, database, caches."""
from __future__ import annotations

import fcntl
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from protocol import Identity, KeyFileError
from protocol.fileio import write_atomic

from node.errors import UserError
from node.settings import check_config_keys, default_config



def default_home() -> Path:
    env = os.environ.get("RALPHSWARM_HOME")
    return Path(env).expanduser() if env else Path.home() / ".ralphswarm"


@dataclass
class Home:
    path: Path

    @property
    def key_path(self) -> Path:
        return self.path / "identity.key"

    @property
    def config_path(self) -> Path:
        return self.path / "config.json"

    @property
    def db_path(self) -> Path:
        return self.path / "replica.sqlite3"

    @property
    def cache_dir(self) -> Path:
        return self.path / "cache"

    @property
    def exists(self) -> bool:
        return self.key_path.exists()

    def init(self, swarm: str | None = None) -> tuple[Identity, bool]:
        """Create identity and config when missing; keep an existing key. Returns (identity, created).
        A home that cannot be written is a UserError naming it."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            created = False
            if self.key_path.exists():
                identity = self.identity()
            else:
                identity = Identity.generate()
                identity.save(self.key_path)
                created = True
            config = self.config() if self.config_path.exists() else default_config()
            if swarm:
                config["swarm"] = swarm
            self.save_config(config)
            self.cache_dir.mkdir(exist_ok=True)
        except OSError as exc:
            raise UserError(f"cannot create the home {self.path}: {exc.strerror or exc}"
                            + (f" ({exc.filename})" if exc.filename and str(exc.filename) != str(self.path) else "")) from None
        return identity, created

    @property
    def lock_path(self) -> Path:
        return self.path / "node.lock"

    def lock(self) -> Any:
        """Hold this home for one node: an exclusive lock on ``node.lock`` (released by the kernel
        when the process ends, however it ends). A second node on the same home gets a UserError
        at once, naming the pid that holds it. Returns the open file; keep it open."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            handle = open(self.lock_path, "a+")
        except OSError as exc:
            raise UserError(f"cannot create the home {self.path}: {exc.strerror or exc}") from None
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "?"
            handle.close()
            raise UserError(f"another node is running on {self.path} (pid {holder}); stop it or give another --home")
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        return handle

    def identity(self) -> Identity:
        try:
            return Identity.load(self.key_path)
        except KeyFileError as exc:
            if not self.key_path.exists():
                raise UserError(f"no identity in {self.path}; run: ralphswarm init --home {self.path}") from None
            raise UserError(str(exc)) from None

    def config(self) -> dict[str, Any]:
        if not self.config_path.exists():
            return default_config()
        try:
            loaded = json.loads(self.config_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise UserError(f"config file {self.config_path} is not valid JSON: {exc}") from None
        if not isinstance(loaded, dict):
            raise UserError(f"config file {self.config_path} must hold a JSON object")
        check_config_keys(loaded, self.config_path)
        return {**default_config(), **loaded}

    def save_config(self, config: dict[str, Any]) -> None:
        write_atomic(self.config_path, (json.dumps(config, indent=2, sort_keys=True) + "\n").encode("utf-8"),
                     mode=0o644)
