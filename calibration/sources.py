"""Where calibration text comes from, always as a `datasets.Dataset` with one text column.

`pydoc_topics` is English documentation shipped with Python itself (`pydoc_data.topics`), so a
build works on any machine with no network; users point `calibration=files` at their own traffic.
"""
from __future__ import annotations

import re
from pathlib import Path

from calibration.errors import CalibrationError

FILE_FORMATS = {".csv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet", ".txt": "text"}
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")


def pydoc_sentences(min_chars: int) -> list[str]:
    from pydoc_data.topics import topics

    sentences = []
    for topic in sorted(topics):
        for paragraph in re.split(r"\n\s*\n", topics[topic]):
            flat = " ".join(paragraph.split())
            # Code listings and tables are not prose: skip paragraphs dominated by symbols.
            if not flat or sum(ch.isalpha() or ch == " " for ch in flat) < 0.85 * len(flat):
                continue
            sentences.extend(s for s in _SENTENCE_END.split(flat) if len(s) >= min_chars)
    return sentences


def load_table(calibration_cfg):
    """Local csv / json / parquet / text files as one `datasets.Dataset` (split `train`)."""
    import datasets

    files = [Path(f).expanduser() for f in calibration_cfg.data_files]
    missing = [str(f) for f in files if not f.is_file()]
    if not files or missing:
        raise CalibrationError(f"calibration.data_files: {missing or 'none given'} not found; give existing "
                             f"csv/json/jsonl/parquet/txt files, e.g. 'calibration.data_files=[traffic.jsonl]'")
    formats = {FILE_FORMATS.get(f.suffix.lower()) for f in files}
    if None in formats or len(formats) != 1:
        raise CalibrationError(f"calibration.data_files must all be one of {sorted(FILE_FORMATS)}; got "
                             f"{[f.name for f in files]}")
    if all(f.stat().st_size == 0 for f in files):
        raise CalibrationError(f"calibration.data_files {[str(f) for f in files]} are empty; give files with examples")
    try:
        table = datasets.load_dataset(formats.pop(), data_files=[str(f) for f in files], split="train")
    except Exception as error:  # datasets raises many types for a file it cannot parse
        if "corresponds to no data" in str(error):
            raise CalibrationError(f"calibration.data_files {[str(f) for f in files]} hold no rows (empty); give "
                                 f"files with examples") from None
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise CalibrationError(f"calibration.data_files could not be parsed ({message}); check the file's "
                             f"format matches its extension") from None
    if table.num_rows == 0:
        raise CalibrationError(f"calibration.data_files {[str(f) for f in files]} hold no rows (empty); give files "
                             f"with examples")
    return table


def load_text_dataset(calibration_cfg):
    """The configured source as a Dataset whose column `text` holds one example per row."""
    import datasets

    source = getattr(calibration_cfg.source, "value", calibration_cfg.source)
    column = calibration_cfg.text_column
    if source == "pydoc_topics":
        return datasets.Dataset.from_dict({"text": pydoc_sentences(calibration_cfg.min_chars)})
    if source == "files":
        dataset = load_table(calibration_cfg)
        if column not in dataset.column_names:
            raise CalibrationError(f"calibration.text_column={column!r} is not a column of the data files; "
                                 f"columns: {dataset.column_names}")
    elif source == "hub":
        try:
            dataset = datasets.load_dataset(calibration_cfg.hub_name, split=calibration_cfg.split)
        except Exception as error:
            raise CalibrationError(f"dataset {calibration_cfg.hub_name!r} split {calibration_cfg.split!r} could not "
                                 f"be loaded offline ({type(error).__name__}: {error}); download it into the "
                                 f"datasets cache first or use calibration=files") from None
        if column not in dataset.column_names:
            raise CalibrationError(f"calibration.text_column={column!r} is not a column of {calibration_cfg.hub_name}; "
                                 f"columns: {dataset.column_names}")
    else:
        raise CalibrationError(f"unknown calibration.source {source!r}")
    values = dataset[column]
    if values and not any(isinstance(value, str) for value in values):
        raise CalibrationError(f"calibration.text_column={column!r} holds {type(values[0]).__name__} values, not "
                             f"text; point it at the column with the input text")
    texts = [t for t in values if isinstance(t, str) and len(t.strip()) >= calibration_cfg.min_chars]
    return datasets.Dataset.from_dict({"text": texts})
