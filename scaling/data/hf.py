"""Local Hugging Face datasets as a source, through the ``datasets`` library (the optional extra ``[hf]``).

A folder written by ``Dataset.save_to_disk`` (``state.json`` and ``data-*.arrow``) is read as its arrow
files, in their order; a ``DatasetDict`` folder (``dataset_dict.json``) as its ``train`` split (or its only
split), with its ``validation`` (``valid``, ``val``, ``dev``) split held out where there is one and
``data.val_source`` is not set. Loose ``.arrow`` files (a folder or glob of a saved dataset's files, the
``datasets`` cache) are read the same way. Rows are memory-mapped and read in batches, never whole.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Optional

from scaling.errors import DataError

VAL_SPLITS = ("validation", "valid", "val", "dev")
ROWS = 2048  # rows per task


def datasets_module(what: str):
    """The ``datasets`` library, or a one-line DataError saying how to install it."""
    try:
        import datasets
    except ImportError:
        raise DataError(f"{what} is a Hugging Face dataset: reading it needs the datasets library; install the "
                        "extra: pip install '.[hf]' (or pip install datasets)") from None
    return datasets


def is_dataset_folder(path: Path) -> bool:
    return path.is_dir() and ((path / "state.json").is_file() or (path / "dataset_dict.json").is_file())


def is_metadata(path: Path) -> bool:
    """A saved dataset's own JSON files (in a folder read file by file they are not documents)."""
    return path.name in ("state.json", "dataset_info.json", "dataset_dict.json") and is_dataset_folder(path.parent)


def _load(root: Path, source: str):
    try:
        return datasets_module(f"data.source={source!r}").load_from_disk(str(root))
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001  (a folder datasets cannot read)
        raise DataError(f"data.source={source!r}: {root} is not a readable saved dataset ({e})") from None


def train_split(ds, source: str) -> tuple[Optional[str], object]:
    """(split name or None for a plain Dataset, the dataset) that is training data."""
    if not hasattr(ds, "keys"):
        return None, ds
    names = list(ds.keys())
    if "train" in names:
        return "train", ds["train"]
    rest = [n for n in names if n not in VAL_SPLITS]
    if len(rest) == 1:
        return rest[0], ds[rest[0]]
    raise DataError(f"data.source={source!r}: a DatasetDict with splits {', '.join(names)} and no 'train'; "
                    "allowed: a 'train' split, or the folder of one split")


def dataset_files(root: Path, source: str) -> list[Path]:
    """The arrow files of a saved dataset folder's training data, in order."""
    _, ds = train_split(_load(root, source), source)
    files = [Path(c["filename"]).resolve() for c in ds.cache_files]
    if not files:
        raise DataError(f"data.source={source!r}: the dataset in {root} has no arrow files (held in memory when "
                        "saved?); allowed: a folder written by save_to_disk")
    return files


def validation_folder(root: Path, source: str) -> Optional[str]:
    """The folder of a DatasetDict's validation split, or None."""
    if not (root / "dataset_dict.json").is_file():
        return None
    ds = _load(root, source)
    name = next((n for n in VAL_SPLITS if n in ds), None)
    return str(root / name) if name is not None and (root / name).is_dir() else None


def arrow_tasks(path: Path, rel: str, text_field: str, mode: str) -> Iterator[tuple]:
    """('rows', rel, first row, [text, ...], mode) tasks of one arrow file, memory-mapped."""
    datasets = datasets_module(str(path))
    try:
        table = datasets.Dataset.from_file(str(path)).data
    except Exception as e:  # noqa: BLE001
        raise DataError(f"{path}: not a readable arrow file of a saved dataset ({e})") from None
    if text_field not in table.column_names:
        raise DataError(f"{path}: no column data.text_field={text_field!r}; columns: {', '.join(table.column_names)}")
    column = table.column(text_field)
    for row in range(0, len(column), ROWS):
        yield ("rows", rel, row, column.slice(row, ROWS).to_pylist(), mode)
