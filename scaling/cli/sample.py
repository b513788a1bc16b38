"""``scaling-sample RUN_DIR``: text from a run's latest checkpoint, decoded with the run's own tokenizer.

The run's ``config.yaml`` gives the model and the data settings; the data's prepared folder (from the cache,
prepared again if it is gone) gives the tokenizer, so the ids mean what they meant in training.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional

from scaling.errors import USER_ERRORS, ConfigError, DataError


def parse(argv: Optional[list[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="scaling-sample", description=__doc__.splitlines()[0])
    p.add_argument("run_dir", help="a run directory (config.yaml and checkpoints/)")
    p.add_argument("--prompt", default="", help="text to continue (default: a document start)")
    p.add_argument("--tokens", type=int, default=200, help="tokens to generate (default 200)")
    p.add_argument("--temperature", type=float, default=0.8, help="softmax temperature; 0 = greedy (default 0.8)")
    p.add_argument("--top-k", type=int, default=50, help="sample among the k likeliest tokens; 0 = all (default 50)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N (default cpu)")
    return p.parse_args(argv)


def load_run(run_dir: Path, device: str):
    """(model in eval mode, tokenizer, context) of a run's latest checkpoint."""
    import torch  # noqa: F401  (the model layer needs it)
    from omegaconf import OmegaConf

    from scaling.config import RunConfig, typed_config
    from scaling.data.prepare import prepare_data
    from scaling.model.gpt import GPT
    from scaling.run.checkpoint import load_latest_checkpoint

    if not (run_dir / "config.yaml").is_file():
        raise ConfigError(f"run_dir={str(run_dir)!r} has no config.yaml; allowed: a run directory of scaling-train")
    cfg = OmegaConf.merge(OmegaConf.structured(RunConfig), OmegaConf.load(run_dir / "config.yaml"))
    run = typed_config(cfg)
    if getattr(run.model, "objective", "clm") != "clm":
        raise ConfigError(f"model.objective={run.model.objective!r} of {run_dir}: only a causal model (clm) samples text")
    prepared = prepare_data(run.data)
    checkpoint = load_latest_checkpoint(run_dir, map_location=device)
    if checkpoint is None:
        raise DataError(f"{run_dir / 'checkpoints'}: no readable checkpoint; train the run first")
    vocab = run.model.vocab_size or prepared.vocab_size
    model = GPT(run.model, vocab).to(device)
    model.load_state_dict(checkpoint["model"])
    return model.eval(), prepared.tokenizer, run.model.context


def generate(model, ids: list[int], n: int, context: int, temperature: float, top_k: int, seed: int,
             device: str) -> list[int]:
    """``n`` more ids after ``ids``, one at a time, the window cropped to the model's context."""
    import torch

    gen = torch.Generator(device=device).manual_seed(seed)
    x = torch.tensor([ids], dtype=torch.long, device=device)
    with torch.no_grad():
        for _ in range(n):
            logits, _ = model(x[:, -context:])
            logits = logits[:, -1, :].float()  # (1, vocab)
            if temperature <= 0:
                nxt = logits.argmax(dim=-1, keepdim=True)
            else:
                logits = logits / temperature
                if top_k:
                    kth = torch.topk(logits, min(top_k, logits.size(-1))).values[:, -1:]
                    logits = logits.masked_fill(logits < kth, float("-inf"))
                nxt = torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=gen)
            x = torch.cat([x, nxt], dim=1)
    return x[0].tolist()


def main(argv: Optional[list[str]] = None) -> int:
    args = parse(argv)
    try:
        if args.tokens < 1 or args.top_k < 0:
            raise ConfigError(f"--tokens={args.tokens} --top-k={args.top_k}: allowed: tokens >= 1, top-k >= 0")
        model, tok, context = load_run(Path(args.run_dir), args.device)
        start = tok.encode(args.prompt) if args.prompt else []
        if not start:
            bos = getattr(tok, "bos_id", None)
            start = [bos] if bos is not None else tok.encode("\n")
        ids = generate(model, start, args.tokens, context, args.temperature, args.top_k, args.seed, args.device)
        keep = ids if args.prompt else ids[len(start):]
        print(tok.decode(keep))
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
