"""Baseline train script of the climbmix task: karpathy/autoresearch's train.py model and optimizer,
ported to the harness interface.

This is the one file the agent edits. The harness (data, token budget, loss curve, evaluation) is
read-only and talks to this file through three names:

  build_model(vocab_size, context) -> torch.nn.Module
      model(idx) returns float logits of shape (B, T, vocab_size) for int64 token ids idx of shape
      (B, T), T <= context. Evaluation calls it on windows of `context` tokens (each starting with
      BOS) and loads the weights that train() leaves in the model (state_dict).
  train(model, loader, log) -> None
      loader.batches(batch_size, seq_len) yields (x, y) int64 tensors of shape (B, T) on
      loader.device, y = x shifted by one token: rows of `context + 1` token ids that the harness
      packed from whole documents (each row starts with BOS, as autoresearch's dataloader packs
      them) in an order drawn from the seed; it stops when the token budget is spent.
      loader.progress is the fraction of the budget consumed (0..1): it drives every schedule.
      log(loss) reports the mean training loss (nats per token) of the latest batch.
The harness seeds torch before build_model, moves the model to the device and wraps train() in bf16
autocast on CUDA. Evaluation scores bits per byte (each target token's length in bytes; special
tokens count none) by code this script never sees; the model must not depend on later tokens, on
other windows of a batch, or on earlier calls.

What differs from autoresearch: schedules follow the token budget (loader.progress) instead of the
wall clock; attention is PyTorch's (FlexAttention with a sliding-window block mask on CUDA, SDPA
with a band mask elsewhere) instead of the FA3 kernel; the fused optimizer steps are compiled on
CUDA only; parameters stay float32 under bf16 autocast.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

DEPTH = 8  # transformer blocks
MODEL_DIM = 512  # residual stream width (autoresearch: DEPTH x 64, rounded up to a multiple of 128)
N_HEADS = 4  # attention heads of MODEL_DIM // N_HEADS channels (autoresearch: head dim 128)
WINDOW_PATTERN = "SSSL"  # per block: S attends to the last context // 2 tokens, L to all; the last block is L
MATRIX_LR = 0.04  # Muon learning rate for block matrices
EMBED_LR = 0.6  # AdamW learning rate for the token and value embeddings (scaled by (MODEL_DIM / 768) ** -0.5)
UNEMBED_LR = 0.004  # AdamW learning rate for the output head (scaled likewise)
SCALAR_LR = 0.5  # AdamW learning rate for the x0 scalars (the residual scalars take 1% of it)
WEIGHT_DECAY = 0.2  # cautious weight decay of Muon, decaying linearly to zero over the budget
ADAM_BETA1 = 0.8  # AdamW first-moment decay
ADAM_BETA2 = 0.95  # AdamW second-moment decay
WARMUP_FRAC = 0.0  # fraction of the budget spent warming the LR up from zero
WARMDOWN_FRAC = 0.5  # fraction of the budget at the end spent decaying the LR
FINAL_LR_FRAC = 0.0  # LR at the end of the budget, as a fraction of the peak
SOFTCAP = 15.0  # logits are squashed to (-SOFTCAP, SOFTCAP) by tanh
X0_LAMBDA = 0.1  # initial weight of the embedding re-added before every block
ROPE_BASE = 10000.0  # rotary embedding base frequency
DEVICE_BATCH_SIZE = 128  # sequences per forward/backward pass (reduce if out of memory)
TOTAL_BATCH_SIZE = 524288  # tokens per optimizer step (gradient accumulation fills it)
COMPILE = 1  # torch.compile the model and the optimizer steps on CUDA (1) or not (0)


def norm(x):
    return F.rms_norm(x, (x.size(-1),))


def has_value_embedding(layer, depth):
    """Alternate blocks, the last always included (autoresearch's has_ve)."""
    return layer % 2 == (depth - 1) % 2


def rotary(x, cos, sin):
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)  # under bf16 autocast q and k stay bf16
    half = x.size(-1) // 2
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat((x1 * cos + x2 * sin, x2 * cos - x1 * sin), dim=-1)


def window_sizes(context):
    sizes = [context // 2 if WINDOW_PATTERN[i % len(WINDOW_PATTERN)] == "S" else context for i in range(DEPTH)]
    sizes[-1] = context
    return sizes


_block_masks = {}  # (T, window) -> FlexAttention block mask, made before compiling (prepare_flex)


def prepare_flex(context, device):
    from torch.nn.attention.flex_attention import create_block_mask

    for window in set(window_sizes(context)):
        if window < context:
            def sliding(b, h, qi, ki, window=window):
                return (qi >= ki) & (qi - ki < window)
            _block_masks[(context, window)] = create_block_mask(sliding, None, None, context, context, device=device)


def attend(q, k, v, window):
    """Causal attention over the last ``window`` positions; q, k, v of shape (B, H, T, D). Compiled
    on CUDA, a sliding window goes through FlexAttention; otherwise SDPA with a band mask."""
    t = q.size(-2)
    if window >= t:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    mask = _block_masks.get((t, window)) if q.is_cuda and torch.compiler.is_compiling() else None
    if mask is not None:
        from torch.nn.attention.flex_attention import flex_attention

        return flex_attention(q, k, v, block_mask=mask)
    i = torch.arange(t, device=q.device)
    band = (i[:, None] >= i[None, :]) & (i[:, None] - i[None, :] < window)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=band)


class Attention(nn.Module):
    def __init__(self, dim, heads, value_embedding):
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim, bias=False)
        self.k = nn.Linear(dim, dim, bias=False)
        self.v = nn.Linear(dim, dim, bias=False)
        self.proj = nn.Linear(dim, dim, bias=False)
        self.gate_channels = 32
        # Value residual (ResFormer): the block's value embedding mixed in by an input-dependent gate per head
        self.ve_gate = nn.Linear(self.gate_channels, heads, bias=False) if value_embedding else None

    def forward(self, x, ve, cos, sin, window):
        b, t, d = x.shape
        hd = d // self.heads
        q = self.q(x).view(b, t, self.heads, hd)
        k = self.k(x).view(b, t, self.heads, hd)
        v = self.v(x).view(b, t, self.heads, hd)
        if ve is not None:
            gate = 2 * torch.sigmoid(self.ve_gate(x[..., :self.gate_channels]))
            v = v + gate.unsqueeze(-1) * ve.view(b, t, self.heads, hd)
        q, k = norm(rotary(q, cos, sin)), norm(rotary(k, cos, sin))
        v = v.to(q.dtype)  # the value embedding is float32: one dtype for the attention kernels
        y = attend(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), window)
        return self.proj(y.transpose(1, 2).reshape(b, t, d))


class MLP(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.fc = nn.Linear(dim, 4 * dim, bias=False)
        self.proj = nn.Linear(4 * dim, dim, bias=False)

    def forward(self, x):
        return self.proj(F.relu(self.fc(x)).square())


class Block(nn.Module):
    def __init__(self, dim, heads, value_embedding):
        super().__init__()
        self.attn = Attention(dim, heads, value_embedding)
        self.mlp = MLP(dim)

    def forward(self, x, ve, cos, sin, window):
        x = x + self.attn(norm(x), ve, cos, sin, window)
        return x + self.mlp(norm(x))


class GPT(nn.Module):
    def __init__(self, vocab_size, context):
        super().__init__()
        self.context = context
        self.windows = window_sizes(context)
        self.embed = nn.Embedding(vocab_size, MODEL_DIM)
        self.blocks = nn.ModuleList(Block(MODEL_DIM, N_HEADS, has_value_embedding(i, DEPTH)) for i in range(DEPTH))
        self.head = nn.Linear(MODEL_DIM, vocab_size, bias=False)
        self.resid_lambdas = nn.Parameter(torch.ones(DEPTH))
        self.x0_lambdas = nn.Parameter(torch.full((DEPTH,), X0_LAMBDA))
        self.value_embeds = nn.ModuleDict({str(i): nn.Embedding(vocab_size, MODEL_DIM)
                                           for i in range(DEPTH) if has_value_embedding(i, DEPTH)})
        hd = MODEL_DIM // N_HEADS
        inv_freq = ROPE_BASE ** (-torch.arange(0, hd, 2, dtype=torch.float32) / hd)
        angles = torch.outer(torch.arange(context, dtype=torch.float32), inv_freq)
        self.register_buffer("cos", angles.cos()[None, :, None, :], persistent=False)
        self.register_buffer("sin", angles.sin()[None, :, None, :], persistent=False)
        self._init_weights()

    @torch.no_grad()
    def _init_weights(self):
        nn.init.normal_(self.embed.weight, std=1.0)
        nn.init.normal_(self.head.weight, std=0.001)
        s = 3 ** 0.5 * MODEL_DIM ** -0.5
        for block in self.blocks:
            for w in (block.attn.q.weight, block.attn.k.weight, block.attn.v.weight, block.mlp.fc.weight):
                nn.init.uniform_(w, -s, s)
            nn.init.zeros_(block.attn.proj.weight)
            nn.init.zeros_(block.mlp.proj.weight)
            if block.attn.ve_gate is not None:
                nn.init.zeros_(block.attn.ve_gate.weight)  # sigmoid(0) x 2 = 1: neutral
        for ve in self.value_embeds.values():
            nn.init.uniform_(ve.weight, -s, s)

    def forward(self, idx):
        t = idx.size(1)
        cos, sin = self.cos[:, :t], self.sin[:, :t]
        x = x0 = norm(self.embed(idx))
        for i, block in enumerate(self.blocks):
            x = self.resid_lambdas[i] * x + self.x0_lambdas[i] * x0
            ve = self.value_embeds[str(i)](idx) if str(i) in self.value_embeds else None
            x = block(x, ve, cos, sin, self.windows[i])
        logits = self.head(norm(x)).float()
        return SOFTCAP * torch.tanh(logits / SOFTCAP)


def build_model(vocab_size, context):
    return GPT(vocab_size, context)


# --- optimizer: Muon (polar express, NorMuon, cautious weight decay) + AdamW, as autoresearch -----

POLAR_EXPRESS = [
    (8.156554524902461, -22.48329292557795, 15.878769915207462),
    (4.042929935166739, -2.808917465908714, 0.5000178451051316),
    (3.8916678022926607, -2.772484153217685, 0.5060648178503393),
    (3.285753657755655, -2.3681294933425376, 0.46449024233003106),
    (2.3465413258596377, -1.7097828382687081, 0.42323551169305323),
]


def adamw_step(p, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps, wd):
    p.mul_(1 - lr * wd)
    exp_avg.lerp_(grad, 1 - beta1)
    exp_avg_sq.lerp_(grad.square(), 1 - beta2)
    denom = (exp_avg_sq / (1 - beta2 ** step)).sqrt() + eps
    p.add_(exp_avg / denom, alpha=-lr / (1 - beta1 ** step))


def muon_step(grads, params, momentum_buffer, second_momentum_buffer, momentum, lr, wd, beta2, red_dim):
    momentum_buffer.lerp_(grads, 1 - momentum)
    g = grads.lerp_(momentum_buffer, momentum)
    x = g.bfloat16() if g.is_cuda else g.float()
    x = x / (x.norm(dim=(-2, -1), keepdim=True) * 1.02 + 1e-6)
    for a, b, c in POLAR_EXPRESS:
        if g.size(-2) > g.size(-1):
            m = x.mT @ x
            x = a * x + x @ (b * m + c * (m @ m))
        else:
            m = x @ x.mT
            x = a * x + (b * m + c * (m @ m)) @ x
    g = x.float()
    v_mean = g.square().mean(dim=red_dim, keepdim=True)
    size = g.size(red_dim)
    v_norm = (v_mean.sum(dim=(-2, -1), keepdim=True) * size).sqrt()
    second_momentum_buffer.lerp_(v_mean, 1 - beta2)
    step_size = second_momentum_buffer.clamp_min(1e-10).rsqrt()
    v_norm_new = ((v_mean * size) * step_size.square()).sum(dim=(-2, -1), keepdim=True).sqrt()
    g = g * (step_size * (v_norm / v_norm_new.clamp_min(1e-10)))
    mask = (g * params) >= 0
    params.sub_(lr * g + lr * wd * params * mask)


class MuonAdamW(torch.optim.Optimizer):
    def __init__(self, groups, compiled):
        super().__init__(groups, defaults={})
        self.adamw = torch.compile(adamw_step, dynamic=False) if compiled else adamw_step
        self.muon = torch.compile(muon_step, dynamic=False) if compiled else muon_step
        # Compiled steps take their changing numbers as 0-D CPU tensors (a float would recompile them).
        self.number = (lambda v: torch.tensor(float(v))) if compiled else float

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            if group["kind"] == "adamw":
                for p in group["params"]:
                    if p.grad is None:
                        continue
                    state = self.state[p]
                    if not state:
                        state.update(step=0, exp_avg=torch.zeros_like(p), exp_avg_sq=torch.zeros_like(p))
                    state["step"] += 1
                    n = self.number
                    self.adamw(p, p.grad, state["exp_avg"], state["exp_avg_sq"], n(state["step"]), n(group["lr"]),
                               n(group["betas"][0]), n(group["betas"][1]), n(group["eps"]), n(group["weight_decay"]))
            else:
                params = [p for p in group["params"] if p.grad is not None]
                if not params:
                    continue
                shape = params[0].shape
                state = self.state[params[0]]
                if not state:
                    tall = shape[-2] >= shape[-1]
                    state["momentum"] = torch.zeros(len(params), *shape, device=params[0].device)
                    state["second"] = torch.zeros((len(params), shape[-2], 1) if tall else (len(params), 1, shape[-1]),
                                                  device=params[0].device)
                stacked = torch.stack(params)
                n = self.number
                self.muon(torch.stack([p.grad for p in params]), stacked, state["momentum"], state["second"],
                          n(group["momentum"]), n(group["lr"] * max(1.0, shape[-2] / shape[-1]) ** 0.5),
                          n(group["weight_decay"]), n(group["beta2"]), -1 if shape[-2] >= shape[-1] else -2)
                torch._foreach_copy_(params, list(stacked.unbind(0)))


def make_optimizer(model, compiled):
    scale = (MODEL_DIM / 768) ** -0.5  # AdamW LRs tuned at width 768
    matrices = list(model.blocks.parameters())
    betas = (ADAM_BETA1, ADAM_BETA2)
    groups = [
        dict(kind="adamw", params=[model.head.weight], lr=UNEMBED_LR * scale, betas=betas, eps=1e-10, weight_decay=0.0),
        dict(kind="adamw", params=[model.embed.weight], lr=EMBED_LR * scale, betas=betas, eps=1e-10, weight_decay=0.0),
        dict(kind="adamw", params=list(model.value_embeds.parameters()), lr=EMBED_LR * scale, betas=betas, eps=1e-10,
             weight_decay=0.0),
        dict(kind="adamw", params=[model.resid_lambdas], lr=SCALAR_LR * 0.01, betas=betas, eps=1e-10, weight_decay=0.0),
        dict(kind="adamw", params=[model.x0_lambdas], lr=SCALAR_LR, betas=(0.96, 0.95), eps=1e-10, weight_decay=0.0),
    ]
    for shape in sorted({p.shape for p in matrices}):
        groups.append(dict(kind="muon", params=[p for p in matrices if p.shape == shape], lr=MATRIX_LR,
                           momentum=0.95, beta2=0.95, weight_decay=WEIGHT_DECAY))
    optimizer = MuonAdamW(groups, compiled)
    for group in optimizer.param_groups:
        group["initial_lr"] = group["lr"]
    return optimizer


def lr_multiplier(progress):
    if WARMUP_FRAC > 0 and progress < WARMUP_FRAC:
        return progress / WARMUP_FRAC
    if progress < 1.0 - WARMDOWN_FRAC:
        return 1.0
    frac = (1.0 - progress) / WARMDOWN_FRAC
    return FINAL_LR_FRAC + (1.0 - FINAL_LR_FRAC) * frac


def compile_here():
    """torch.compile's caches in the run's own directory (the sandbox's only writable one), and its
    kernels compiled in this process (a pool of workers would pass the sandbox's process limit)."""
    import os
    import tempfile

    base = os.path.join(os.getcwd(), ".cache")
    for name, sub in (("TORCHINDUCTOR_CACHE_DIR", "inductor"), ("TRITON_CACHE_DIR", "triton"), ("TRITON_HOME", "home")):
        os.environ.setdefault(name, os.path.join(base, sub))
    os.environ.setdefault("TORCHINDUCTOR_COMPILE_THREADS", "1")
    if not os.access(tempfile.gettempdir(), os.W_OK):  # the sandbox's /tmp may be read-only or hidden
        os.makedirs(os.path.join(base, "tmp"), exist_ok=True)
        tempfile.tempdir = os.path.join(base, "tmp")


def train(model, loader, log):
    compiled = bool(COMPILE) and loader.device.type == "cuda"
    if compiled:
        compile_here()
        prepare_flex(model.context, loader.device)
    optimizer = make_optimizer(model, compiled)
    forward = torch.compile(model, dynamic=False) if compiled else model
    seq_len = model.context
    world = getattr(loader, "world", 1)  # data-parallel ranks: each batch is this rank's share
    accum = max(1, TOTAL_BATCH_SIZE // (DEVICE_BATCH_SIZE * seq_len * world))
    pending = steps = 0
    model.train()
    for x, y in loader.batches(DEVICE_BATCH_SIZE, seq_len):
        logits = forward(x)
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1))
        (loss / accum).backward()
        log(loss.detach())  # the harness reads it back only at curve points: no sync per step
        pending += 1
        if pending == accum:
            step(optimizer, model, loader.progress, steps, loader)
            pending, steps = 0, steps + 1
    if pending:
        step(optimizer, model, loader.progress, steps, loader)


def step(optimizer, model, progress, steps, loader=None):
    if loader is not None and getattr(loader, "world", 1) > 1:
        loader.average_gradients(model)  # every rank takes the same step
    multiplier = lr_multiplier(progress)
    frac = min(steps / 300, 1)
    for group in optimizer.param_groups:
        group["lr"] = group["initial_lr"] * multiplier
        if group["kind"] == "muon":
            group["momentum"] = (1 - frac) * 0.85 + frac * 0.95
            group["weight_decay"] = WEIGHT_DECAY * (1 - progress)
    optimizer.step()
    model.zero_grad(set_to_none=True)
