"""Baseline train script: a small modern GPT over bytes, trained with Muon + AdamW.

This is the one file the agent edits. The harness (data, token budget, loss curve, evaluation) is
read-only and talks to this file through three names:

  build_model(vocab_size, context) -> torch.nn.Module
      model(idx) returns float logits of shape (B, T, vocab_size) for int64 idx of shape (B, T),
      T <= context. Evaluation calls it on windows of `context` bytes and loads the weights that
      train() leaves in the model (state_dict), so build_model must rebuild the same architecture.
  train(model, loader, log) -> None
      loader.batches(batch_size, seq_len) yields (x, y) int64 tensors of shape (B, T) on
      loader.device, y = x shifted by one byte: consecutive rows of the token stream the harness
      drew for this run from the seed (the training split itself is never in this process); it
      stops when the token budget is spent, and a second pass sees the same tokens again.
      loader.progress is the fraction of the budget consumed (0..1): it drives every schedule.
      log(loss) reports the mean training loss (nats per byte) of the latest batch; the harness
      records the loss curve from it and stops the run on NaN.
The harness seeds torch before build_model, moves the model to the device, and wraps train() in
bf16 autocast on CUDA. The trained state_dict is saved as plain tensors. Evaluation rebuilds the
model in other processes and asks it for logits on windows of `context` bytes; it is scored there
by code this script never sees, and must not depend on later bytes, on other windows of a batch, or
on earlier calls. Training may take at most the task's compute_cap times the baseline's wall time.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

DEPTH = 2  # transformer blocks
MODEL_DIM = 64  # residual stream width
N_HEADS = 4  # attention heads (MODEL_DIM must divide evenly)
MLP_RATIO = 4  # MLP hidden width / MODEL_DIM
MATRIX_LR = 0.03  # Muon learning rate for 2-D block matrices
EMBED_LR = 0.1  # AdamW learning rate for the byte embedding
UNEMBED_LR = 0.01  # AdamW learning rate for the output head
SCALAR_LR = 0.02  # AdamW learning rate for per-layer scalars
WEIGHT_DECAY = 0.0  # decoupled weight decay on block matrices (per unit of LR)
MUON_MOMENTUM = 0.95  # Muon momentum (Nesterov)
ADAM_BETA1 = 0.8  # AdamW first-moment decay
ADAM_BETA2 = 0.95  # AdamW second-moment decay
WARMUP_FRAC = 0.0  # fraction of the budget spent warming the LR up from zero
WARMDOWN_FRAC = 0.4  # fraction of the budget at the end spent decaying the LR
FINAL_LR_FRAC = 0.0  # LR at the end of the budget, as a fraction of the peak
SOFTCAP = 15.0  # logits are squashed to (-SOFTCAP, SOFTCAP) by tanh
X0_LAMBDA = 0.1  # initial weight of the embedding re-added before every block
ROPE_BASE = 10000.0  # rotary embedding base frequency
DEVICE_BATCH_SIZE = 16  # sequences per forward/backward pass
SEQ_LEN = 64  # training sequence length in bytes
TOTAL_BATCH_SIZE = 1024  # tokens per optimizer step (gradient accumulation fills it)


def rms_norm(x):
    return F.rms_norm(x, (x.size(-1),))


def rotary(x, base):
    """Rotate pairs of channels by position-dependent angles (RoFormer, Su et al. 2021)."""
    t, half = x.size(-2), x.size(-1) // 2
    inv_freq = base ** (-torch.arange(half, dtype=torch.float32, device=x.device) / half)
    angles = torch.arange(t, dtype=torch.float32, device=x.device)[:, None] * inv_freq[None, :]
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat((x1 * cos + x2 * sin, x2 * cos - x1 * sin), dim=-1)


class Attention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim, bias=False)
        nn.init.zeros_(self.proj.weight)  # each block starts as the identity

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, d // self.heads).transpose(1, 3).unbind(2)
        q, k = rms_norm(q), rms_norm(k)  # QK-norm keeps attention logits bounded
        q, k = rotary(q, ROPE_BASE), rotary(k, ROPE_BASE)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).reshape(b, t, d))


class MLP(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.fc = nn.Linear(dim, MLP_RATIO * dim, bias=False)
        self.proj = nn.Linear(MLP_RATIO * dim, dim, bias=False)
        nn.init.zeros_(self.proj.weight)

    def forward(self, x):
        return self.proj(F.relu(self.fc(x)).square())  # ReLU^2 (So et al., Primer 2021)


class Block(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.attn = Attention(dim, heads)
        self.mlp = MLP(dim)
        self.resid_lambda = nn.Parameter(torch.tensor(1.0))
        self.x0_lambda = nn.Parameter(torch.tensor(X0_LAMBDA))

    def forward(self, x, x0):
        x = self.resid_lambda * x + self.x0_lambda * x0
        x = x + self.attn(rms_norm(x))
        return x + self.mlp(rms_norm(x))


class GPT(nn.Module):
    def __init__(self, vocab_size, context):
        super().__init__()
        self.context = context
        self.embed = nn.Embedding(vocab_size, MODEL_DIM)
        self.blocks = nn.ModuleList(Block(MODEL_DIM, N_HEADS) for _ in range(DEPTH))
        self.head = nn.Linear(MODEL_DIM, vocab_size, bias=False)
        nn.init.normal_(self.embed.weight, std=1.0)
        nn.init.normal_(self.head.weight, std=0.5 / math.sqrt(MODEL_DIM))

    def forward(self, idx):
        x = x0 = rms_norm(self.embed(idx))
        for block in self.blocks:
            x = block(x, x0)
        logits = self.head(rms_norm(x)).float()
        return SOFTCAP * torch.tanh(logits / SOFTCAP)


def build_model(vocab_size, context):
    return GPT(vocab_size, context)


def orthogonalize(g, steps=5):
    """Approximate U V^T of g = U S V^T by a quintic Newton-Schulz iteration (Jordan et al., Muon)."""
    a, b, c = 3.4445, -4.7750, 2.0315
    x = g.bfloat16() if g.is_cuda else g.float()
    transposed = x.size(0) > x.size(1)
    if transposed:
        x = x.T
    x = x / (x.norm() + 1e-7)
    for _ in range(steps):
        s = x @ x.T
        x = a * x + (b * s + c * s @ s) @ x
    if transposed:
        x = x.T
    return x.to(g.dtype)


class Muon(torch.optim.Optimizer):
    """MomentUm Orthogonalized by Newton-schulz, for 2-D weight matrices only."""

    def __init__(self, params, lr, momentum, weight_decay):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                buf = self.state[p].setdefault("momentum", torch.zeros_like(p.grad))
                buf.lerp_(p.grad, 1 - group["momentum"])
                update = orthogonalize(p.grad.lerp(buf, group["momentum"]))
                scale = max(1.0, p.size(0) / p.size(1)) ** 0.5  # same RMS for tall and wide matrices
                p.mul_(1 - group["lr"] * group["weight_decay"])
                p.add_(update, alpha=-group["lr"] * scale)


def lr_multiplier(progress):
    if WARMUP_FRAC > 0 and progress < WARMUP_FRAC:
        return progress / WARMUP_FRAC
    if progress < 1.0 - WARMDOWN_FRAC:
        return 1.0
    frac = (1.0 - progress) / WARMDOWN_FRAC
    return FINAL_LR_FRAC + (1.0 - FINAL_LR_FRAC) * frac


def make_optimizers(model):
    matrices = [p for p in model.blocks.parameters() if p.ndim == 2]
    scalars = [p for p in model.blocks.parameters() if p.ndim < 2]
    adam = torch.optim.AdamW(
        [
            dict(params=[model.embed.weight], lr=EMBED_LR),
            dict(params=[model.head.weight], lr=UNEMBED_LR),
            dict(params=scalars, lr=SCALAR_LR),
        ],
        betas=(ADAM_BETA1, ADAM_BETA2),
        eps=1e-10,
        weight_decay=0.0,
    )
    muon = Muon(matrices, lr=MATRIX_LR, momentum=MUON_MOMENTUM, weight_decay=WEIGHT_DECAY)
    optimizers = [adam, muon]
    for opt in optimizers:
        for group in opt.param_groups:
            group["initial_lr"] = group["lr"]
    return optimizers


def train(model, loader, log):
    optimizers = make_optimizers(model)
    accum = max(1, TOTAL_BATCH_SIZE // (DEVICE_BATCH_SIZE * SEQ_LEN))
    pending = 0
    model.train()
    for x, y in loader.batches(DEVICE_BATCH_SIZE, SEQ_LEN):
        logits = model(x)
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1))
        (loss / accum).backward()
        log(loss.detach())
        pending += 1
        if pending == accum:
            step(optimizers, loader.progress)
            pending = 0
    if pending:
        step(optimizers, loader.progress)


def step(optimizers, progress):
    multiplier = lr_multiplier(progress)
    for opt in optimizers:
        for group in opt.param_groups:
            group["lr"] = group["initial_lr"] * multiplier
        opt.step()
        opt.zero_grad(set_to_none=True)
