"""``scaling-prepare``: prepare (or find in the cache) the token files of a data config, ahead of training."""

from __future__ import annotations

import json
import sys
import time
from typing import Optional

from scaling.config import CONF_DIR, DataConfig
from scaling.data.prepare import prepare_data
from scaling.errors import USER_ERRORS, ConfigError


USAGE = """usage: scaling-prepare [data=PRESET] [data.KEY=VALUE ...]

Prepare (or find in the cache) the token shards a training run with these data settings would use, and
print the prepared folder and its meta.json. PRESET is a file of conf/data/ (e.g. stdlib,
shakespeare-char, fineweb-gpt2, jsonl-gpt2). Keys (defaults as in training; docs/data.md):
  data.source          stdlib | a file | a folder | a glob | a list: text, .jsonl[.gz|.zst], .parquet, token shards,
                       a saved Hugging Face dataset folder (pip install ".[hf]")
  data.tokenizer       byte | char | bpe | gpt2 (tiktoken names) | tiktoken:PATH | hf:PATH | sp:PATH   (byte)
  data.text_field      the text's JSON key or parquet column                                  (text)
  data.doc_sep         auto | bos | eos | both | none (auto: bos where the tokenizer has one)  (auto)
  data.val_source      held-out files (fineweb_val_*.bin, a validation jsonl)                 (null)
  data.val_fraction    held-out share: by file, position or document hash                    (0.05)
  data.val_tokens      held-out token budget per source; null = val_fraction                  (null)
  data.sources         a mixture: {name:{source:...,weight:w},...} (Hydra's grammar)          (null)
  data.max_bytes       cap on raw text read; null = no cap                                    (16000000)
  data.workers         tokenizing processes (same bytes for any number)                       (1)
  data.shard_tokens    tokens per shard file                                                  (100000000)
  data.dtype, data.vocab_size   raw token files without a header or a named tokenizer
  data.cache_dir       cache folder; null = $SCALING_DATA_DIR or ~/.cache/scaling-harness/data
The 'data.' prefix may be left out. Examples:
  scaling-prepare data.source=input.txt data.tokenizer=char
  scaling-prepare data=jsonl-gpt2 data.source='corpus/*.jsonl.zst' data.workers=8
"""

def parse_overrides(args: list[str]):
    """Data settings (a DictConfig of DataConfig) from ``data=PRESET`` and ``data.key=value`` overrides.

    As in Hydra, the preset (a file of ``conf/data/``) applies first, then the overrides in order; every
    key and value is checked against the schema.
    """
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    cfg = OmegaConf.structured(DataConfig)
    presets = [a.split("=", 1)[1] for a in args if a.startswith("data=")]
    for name in presets[-1:]:
        path = CONF_DIR / "data" / f"{name}.yaml"
        if not path.is_file():
            known = sorted(p.stem for p in (CONF_DIR / "data").glob("*.yaml"))
            raise ConfigError(f"data={name!r} is not a preset; allowed: {', '.join(known) or 'none found'}")
        preset = OmegaConf.load(path)
        preset.pop("defaults", None)
        try:
            cfg = OmegaConf.merge(cfg, preset)
        except OmegaConfBaseException as e:
            raise ConfigError(f"data={name!r}: {path} does not fit the data schema: {str(e).splitlines()[0]}") from None
    for arg in args:
        if arg.startswith("data="):
            continue
        if "=" not in arg:
            raise ConfigError(f"argument {arg!r} is not an override; use data.KEY=VALUE (see scaling-prepare --help)")
        key, value = arg.split("=", 1)
        field = key.removeprefix("data.")
        if field not in DataConfig.__dataclass_fields__:
            allowed = ", ".join(f"data.{k}" for k in DataConfig.__dataclass_fields__)
            raise ConfigError(f"{key!r} is not a data setting; allowed: {allowed}")
        try:
            if field == "sources":  # a mapping in Hydra's override grammar, as scaling-train reads it
                from hydra.core.override_parser.overrides_parser import OverridesParser

                cfg = OmegaConf.merge(cfg, {field: OverridesParser.create().parse_override(arg).value()})
            else:
                cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist([f"{field}={value}"]))
        except (OmegaConfBaseException, HydraException) as e:
            raise ConfigError(f"data.{field}={value!r} is not allowed: {str(e).splitlines()[0]}") from None
    return cfg


def main(argv: Optional[list[str]] = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in args):
        print(USAGE, end="")
        return 0
    try:
        cfg = parse_overrides(args)
        t0 = time.perf_counter()
        prepared = prepare_data(cfg)
        dt = time.perf_counter() - t0
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(prepared.dir)
    print(json.dumps(prepared.meta, indent=2))
    print(f"ready in {dt:.2f}s ({cfg.tokenizer}, {prepared.meta['train_tokens']:,} train / "
          f"{prepared.meta['val_tokens']:,} val tokens)", file=sys.stderr)
    for source in prepared.sources:  # a mixture: each source's own folder and counts
        print(f"  {source['name']}: weight {source['weight']:g}, {source['train_tokens']:,} train / "
              f"{source['val_tokens']:,} val tokens, {source['dir']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
