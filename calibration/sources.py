"""Where calibration text comes from, always as a `datasets.Dataset` with one text column.

`pydoc_topics` is English documentation shipped with Python itself (`pydoc_data.topics`), so a
build works on any machine with no network; users point `calibration=files` at their own traffic.
"""
from __future__ import annotations

import codecs
import logging
import re
from contextlib import contextmanager
from pathlib import Path

from calibration.errors import CalibrationError, one_line

FILE_FORMATS = {".csv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet", ".txt": "text"}
TEXT_FORMATS = ("csv", "json", "text")  # datasets reads these as UTF-8
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
    file_format = formats.pop()
    if file_format in TEXT_FORMATS:
        for file in files:
            check_utf8(file)
    try:
        with _quiet("datasets"):  # it also logs a file it cannot read as an ERROR; the error below says it once
            table = datasets.load_dataset(file_format, data_files=[str(f) for f in files], split="train")
    except Exception as error:  # datasets raises many types for a file it cannot parse
        if "corresponds to no data" in str(error):
            raise CalibrationError(f"calibration.data_files {[str(f) for f in files]} hold no rows (empty); give "
                                 f"files with examples") from None
        raise CalibrationError(f"calibration.data_files {[str(f) for f in files]} could not be parsed "
                               f"({one_line(error)}); check the file's format matches its extension") from None
    if table.num_rows == 0:
        raise CalibrationError(f"calibration.data_files {[str(f) for f in files]} hold no rows (empty); give files "
                             f"with examples")
    return table


@contextmanager
def _quiet(logger_name: str):
    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def check_utf8(path: Path, chunk_size: int = 1 << 20) -> None:
    """Refuse a text file that is not UTF-8 (datasets' own error names neither the file nor the byte)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(chunk_size), b""):
            pending = len(decoder.getstate()[0])
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as error:
                raise CalibrationError(
                    f"calibration.data_files: {path} is not UTF-8 text (byte 0x{error.object[error.start]:02x} at "
                    f"offset {offset - pending + error.start}); re-save it as UTF-8, e.g. `iconv -f latin1 -t utf-8 "
                    f"{path.name} > {path.stem}.utf8{path.suffix}`") from None
            offset += len(chunk)
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        raise CalibrationError(f"calibration.data_files: {path} is not UTF-8 text (it ends inside a multi-byte "
                               f"character: truncated?); re-save it as UTF-8") from None


def hub_dataset_label(calibration_cfg) -> str:
    """`glue/sst2@<revision>`: a hub dataset as messages and the stamp name it."""
    label = str(calibration_cfg.hub_name)
    if calibration_cfg.hub_config_name:
        label += f"/{calibration_cfg.hub_config_name}"
    return label + (f"@{calibration_cfg.hub_revision}" if calibration_cfg.hub_revision else "")


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
        which = hub_dataset_label(calibration_cfg)
        try:
            dataset = datasets.load_dataset(calibration_cfg.hub_name, calibration_cfg.hub_config_name,
                                            split=calibration_cfg.split, revision=calibration_cfg.hub_revision)
        except Exception as error:
            raise CalibrationError(f"dataset {which} split {calibration_cfg.split!r} could not be loaded offline "
                                   f"({one_line(error)}); download it into the datasets cache first (with that "
                                   f"calibration.hub_config_name and calibration.hub_revision) or use "
                                   f"calibration=files") from None
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
