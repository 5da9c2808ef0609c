"""Where calibration data comes from: files, hub datasets and image folders through `datasets`; texts as a list.

`pydoc_topics` is English documentation shipped with Python itself (`pydoc_data.topics`), so a
build works on any machine with no network; users point `calibration=files` at their own traffic.
"""
from __future__ import annotations

import codecs
import io
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


def load_texts(calibration_cfg) -> list[str]:
    """The configured source's examples, one text each: files and hub datasets through `datasets`; the built-in
    pydoc sentences without it (importing it is about 0.9 s of a build)."""
    source = getattr(calibration_cfg.source, "value", calibration_cfg.source)
    column = calibration_cfg.text_column
    if source == "pydoc_topics":
        return pydoc_sentences(calibration_cfg.min_chars)
    import datasets

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
    return [t for t in values if isinstance(t, str) and len(t.strip()) >= calibration_cfg.min_chars]


# --------------------------------------------------------------------------- tables, labels and images
def load_source_table(calibration_cfg):
    """The configured files or hub dataset as one `datasets.Dataset` (its columns as they are)."""
    import datasets

    source = getattr(calibration_cfg.source, "value", calibration_cfg.source)
    if source == "files":
        return load_table(calibration_cfg)
    if source == "hub":
        try:
            return datasets.load_dataset(calibration_cfg.hub_name, split=calibration_cfg.split)
        except Exception as error:
            raise CalibrationError(f"dataset {calibration_cfg.hub_name!r} split {calibration_cfg.split!r} could not "
                                   f"be loaded offline ({one_line(error)}); download it into the "
                                   f"datasets cache first or use calibration=files") from None
    raise CalibrationError(f"calibration.source={source} holds no table of text; use calibration=files or "
                           f"calibration=hub")


def _column(table, key: str, column: str, where: str):
    if column not in table.column_names:
        raise CalibrationError(f"calibration.{key}={column!r} is not a column of {where}; columns: "
                               f"{table.column_names}")
    return table[column]


def class_names(table, column: str) -> list[str] | None:
    """The names of a `datasets.ClassLabel` column (its values are ids into them), else None."""
    feature = table.features.get(column)
    names = getattr(feature, "names", None) or getattr(getattr(feature, "feature", None), "names", None)
    return list(names) if names else None


def label_ids(values: list, id2label: dict[int, str], where: str, names: list[str] | None = None,
              numbers: list[int] | None = None, unit: str = "row") -> list[int]:
    """Labels as the model's class ids: a name of its id2label (case-insensitive), or an id inside it. A
    `ClassLabel` column's ids are read as its names first. Anything else is refused, naming its `unit` by its
    number (`numbers`, from 1 by default: the file's row numbers when rows were skipped)."""
    label2id = {str(name).lower(): int(index) for index, name in id2label.items()}
    default_names = all(str(name) == f"LABEL_{index}" for index, name in id2label.items())
    shown = ", ".join(f"{index}: {name!r}" for index, name in sorted(id2label.items())[:12])
    ids = []
    for number, value in zip(numbers or range(1, len(values) + 1), values):
        if names is not None and isinstance(value, int) and 0 <= value < len(names):
            name = names[value]
            if str(name).lower() in label2id:
                ids.append(label2id[str(name).lower()])
                continue
            if not default_names and not str(name).strip().lstrip("-").isdigit():
                value = name  # refused below, by its name
        if isinstance(value, str) and value.strip().lower() in label2id:
            ids.append(label2id[value.strip().lower()])
            continue
        number_value = value
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            number_value = int(value.strip())
        if isinstance(number_value, int) and not isinstance(number_value, bool) and number_value in id2label:
            ids.append(number_value)
            continue
        raise CalibrationError(f"{where}, {unit} {number}: label {value!r} is outside the model's labels (id2label "
                               f"{{{shown}{', ...' if len(id2label) > 12 else ''}}}); give the model's label names "
                               f"or ids 0..{len(id2label) - 1}, or a checkpoint trained on these labels")
    return ids


def _length(example) -> int:
    return len(example) if isinstance(example, str) else sum(len(part) for part in example)


def label_sets(values: list, rows: list[int], id2label: dict[int, str], where: str,
               names: list[str] | None = None) -> list[tuple[int, ...]]:
    """A multi-label classifier's labels: each value a list of names or ids of `id2label` (a single value is a list
    of one), as a sorted tuple of ids; `rows` number the values in `where` (from 0)."""
    sets = []
    for row, value in zip(rows, values):
        value = list(value) if isinstance(value, (list, tuple)) else [value]
        sets.append(tuple(sorted(set(label_ids(value, id2label, f"{where}, row {row + 1}", names, unit="label")))))
    return sets


def load_text_examples(calibration_cfg, id2label: dict[int, str] | None = None, words: bool = False,
                       multi_label: bool = False) -> dict:
    """Examples of a text model from files, a hub dataset or pydoc_topics: `examples` (texts; (text, pair)
    tuples with calibration.text_pair_column; word tuples when `words`, for token classification), and
    `labels` (class ids of `id2label`, per word when `words`; with `multi_label`, each row's list of labels as a
    sorted tuple of ids, a single value counting as a list of one) when calibration.label_column is set."""
    source = getattr(calibration_cfg.source, "value", calibration_cfg.source)
    pair_column, label_column = calibration_cfg.text_pair_column, calibration_cfg.label_column
    if source == "pydoc_topics":
        if pair_column or label_column:
            raise CalibrationError("calibration=pydoc_topics has one unlabelled text column; for pairs or labels "
                                   "use calibration=files or calibration=hub")
        texts = pydoc_sentences(calibration_cfg.min_chars)
        return {"examples": [tuple(t.split()) for t in texts] if words else texts, "labels": None}
    table = load_source_table(calibration_cfg)
    where = (f"calibration.data_files={[str(f) for f in calibration_cfg.data_files]}" if source == "files"
             else f"dataset {calibration_cfg.hub_name}")
    texts = list(_column(table, "text_column", calibration_cfg.text_column, where))
    pairs = list(_column(table, "text_pair_column", pair_column, where)) if pair_column else None
    labels = list(_column(table, "label_column", label_column, where)) if label_column else None
    keep, examples = [], []
    for row, text in enumerate(texts):
        if words:
            if isinstance(text, str):
                text = text.split()
            if not isinstance(text, (list, tuple)) or not text or not all(isinstance(w, str) for w in text):
                continue
            example = tuple(text)
        else:
            if not isinstance(text, str) or (pairs is not None and not isinstance(pairs[row], str)):
                continue
            example = text if pairs is None else (text, pairs[row])
        if _length(example) >= calibration_cfg.min_chars:
            keep.append(row)
            examples.append(example)
    if texts and not keep and not any(isinstance(t, (str, list, tuple)) for t in texts):
        raise CalibrationError(f"calibration.text_column={calibration_cfg.text_column!r} holds "
                               f"{type(texts[0]).__name__} values, not text; point it at the column with the input text")
    if labels is None:
        return {"examples": examples, "labels": None}
    if id2label is None:
        raise CalibrationError("calibration.label_column is set but the model has no labels (id2label)")
    names = class_names(table, label_column)
    label_where = f"{where} column {label_column}"
    if words:
        kept_labels = []
        for row in keep:
            tags = labels[row]
            if isinstance(tags, str):
                tags = tags.split()
            if not isinstance(tags, (list, tuple)) or len(tags) != len(examples[len(kept_labels)]):
                raise CalibrationError(f"{label_where}, row {row + 1}: token classification needs one label per word "
                                       f"of calibration.text_column ({len(examples[len(kept_labels)])} words, got "
                                       f"{tags!r})")
            kept_labels.append(tuple(label_ids(list(tags), id2label, f"{label_where}, row {row + 1}", names,
                                               unit="word")))
        return {"examples": examples, "labels": kept_labels}
    if multi_label:
        return {"examples": examples, "labels": label_sets([labels[row] for row in keep], keep, id2label,
                                                           label_where, names)}
    return {"examples": examples, "labels": label_ids([labels[row] for row in keep], id2label, label_where, names,
                                                      numbers=[row + 1 for row in keep])}


def load_images(calibration_cfg, id2label: dict[int, str] | None = None, multi_label: bool = False) -> dict:
    """An image folder (datasets' `imagefolder`: one subfolder per class) or a hub dataset with an image column:
    `examples` (each image's encoded bytes), `paths` and `labels` (class ids of `id2label`: the folder names, or
    calibration.label_column). Every image is decoded once here: one that cannot be is refused by its file."""
    import datasets
    from PIL import Image, UnidentifiedImageError

    source = getattr(calibration_cfg.source, "value", calibration_cfg.source)
    if source == "images":
        folder = Path(str(calibration_cfg.path or "")).expanduser()
        if not calibration_cfg.path or not folder.is_dir():
            raise CalibrationError(f"calibration.path={calibration_cfg.path!r} is not a folder; give a folder of "
                                   f"images, one subfolder per class (e.g. val/cat/1.png, val/dog/2.png)")
        where = f"calibration.path={folder}"
        try:
            with _quiet("datasets"):
                table = datasets.load_dataset("imagefolder", data_dir=str(folder), split="train")
        except Exception as error:
            raise CalibrationError(f"{where} could not be read as an image folder ({one_line(error)}); give a "
                                   f"folder of png/jpeg images, one subfolder per class") from None
    else:
        table = load_source_table(calibration_cfg)
        where = f"dataset {calibration_cfg.hub_name}" if source == "hub" else "calibration.data_files"
    column = calibration_cfg.image_column
    if column not in table.column_names:
        raise CalibrationError(f"calibration.image_column={column!r} is not a column of {where}; columns: "
                               f"{table.column_names}")
    if table.num_rows == 0:
        raise CalibrationError(f"{where} holds no images")
    if isinstance(table.features[column], datasets.Image):
        table = table.cast_column(column, datasets.Image(decode=False))
    examples, paths = [], []
    for number, cell in enumerate(table[column], start=1):
        path = cell.get("path") if isinstance(cell, dict) else None
        data = cell.get("bytes") if isinstance(cell, dict) else None
        name = path or f"{where}, row {number}"
        try:
            if data is None:
                data = Path(path).read_bytes()
            with Image.open(io.BytesIO(data)) as image:
                image.load()
        except (OSError, UnidentifiedImageError, ValueError, TypeError) as error:
            reason = "not an image format Pillow can read" if isinstance(error, UnidentifiedImageError) \
                else one_line(error)
            raise CalibrationError(f"image {name} cannot be decoded ({reason}); remove or replace the "
                                   f"file (png, jpeg, ...)") from None
        examples.append(bytes(data))
        paths.append(name)
    label_column = calibration_cfg.label_column or ("label" if source == "images" else None)
    labels = None
    if label_column and label_column in table.column_names:
        if id2label is None:
            raise CalibrationError(f"{where} has labels but the model has no id2label")
        values, label_where = list(table[label_column]), f"{where} labels ({label_column})"
        labels = label_sets(values, list(range(len(values))), id2label, label_where,
                            class_names(table, label_column)) if multi_label else \
            label_ids(values, id2label, label_where, class_names(table, label_column))
    elif calibration_cfg.label_column:
        raise CalibrationError(f"calibration.label_column={label_column!r} is not a column of {where}; columns: "
                               f"{table.column_names}")
    return {"examples": examples, "paths": paths, "labels": labels}
