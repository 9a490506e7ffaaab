"""Which files make one training example: images paired with their label files, by name, by a
naming rule, by channel numbers (``case_0000``) or from a list, whatever the file format.

Every problem with the files raises :class:`~unet_lab.data.files.DataError` naming the file
(or the list) and what was looked for, before anything is read; a malformed ``mask_name`` or
``image_pattern`` raises :class:`~unet_lab.arguments.InvalidArgumentError`.
"""

from __future__ import annotations

import csv
import json
import re
import string
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from unet_lab.arguments import InvalidArgumentError
from unet_lab.data.files import DataError

CHANNEL = re.compile(r"(?P<case>.+)_(?P<channel>\d{4})")  # nnU-Net: case_0000, case_0001, ...

# Said when equal names fail to pair: the other ways to pair.
_PAIRING_HINT = (
    " (masks named otherwise: data.mask_name, e.g. '{id}_manual1', with data.image_pattern;"
    " or a list: data.pairs)"
)


@dataclass(frozen=True, order=True)
class Case:
    """One training example: its name, its image file(s) (several = channels), its label file
    (None: unlabelled)."""

    name: str
    images: tuple[Path, ...]
    label: Path | None


def find_cases(
    root: Path,
    image_dir: str,
    label_dir: str,
    suffixes: Sequence[str],
    mask_name: str | None = None,
    image_pattern: str | None = None,
    channel_suffix: bool = False,
) -> list[Case]:
    """The cases of ``root/image_dir`` with their labels from ``root/label_dir``, sorted by name.

    Files count when their name ends with one of ``suffixes`` (any case; ``.nii.gz`` is one
    suffix) and does not start with a dot; a file's name is its name without that suffix.

    Args:
        root: the folder holding both folders.
        image_dir, label_dir: the folder names (both must exist).
        suffixes: the accepted file suffixes, e.g. ``(".png", ".tif")`` or ``(".nii.gz",)``.
        mask_name: the label file's name (without suffix) made from the image's id, a format
            with ``{id}``, e.g. ``"{id}_manual1"``; the label may have any accepted suffix.
            Default: ``"{id}"``, so that without ``image_pattern`` labels and images share names.
        image_pattern: a regular expression the whole image name must match; its one group, or
            its group named ``id``, is the id (e.g. ``r"(\\d+)_training"``). Default: the id is
            the image name.
        channel_suffix: image files are ``case_0000``, ``case_0001``.. (nnU-Net): the files of
            one case are its channels in that order, numbered 0..n-1, as many for every case;
            the case's name (``case``) is then the image name above.

    Every image needs a label and every label an image.
    """
    rule = _MaskRule(mask_name, image_pattern, suffixes)
    images_dir, labels_dir = root / image_dir, root / label_dir
    for needed in (images_dir, labels_dir):
        if not needed.is_dir():
            raise DataError(
                f"{needed}: folder not found (expected {image_dir}/ and {label_dir}/ in {root})"
            )
    images, labels = list_files(images_dir, suffixes), list_files(labels_dir, suffixes)
    if not images:
        raise DataError(f"{images_dir}: no images ({_suffix_text(suffixes)})")
    groups = _channel_groups(images) if channel_suffix else {n: (p,) for n, p in images.items()}
    cases: list[Case] = []
    used: dict[str, Path] = {}  # label name -> the (first) image paired with it
    for name in sorted(groups):
        files = groups[name]
        wanted = rule.label_name(name, files[0])
        label = labels.get(wanted)
        if label is None:
            looked_for = rule.looked_for(wanted)
            hint = "" if looked_for else _PAIRING_HINT
            raise DataError(f"{files[0]}: image without a mask in {labels_dir}{looked_for}{hint}")
        if wanted in used:
            raise DataError(
                f"{files[0]}: its mask {label.name} is also the mask of {used[wanted].name}"
                f"{rule.looked_for(wanted)}"
            )
        used[wanted] = files[0]
        cases.append(Case(name, files, label))
    for name, path in labels.items():
        if name not in used:
            raise DataError(f"{path}: mask without an image in {images_dir}{rule.unmatched()}")
    check_cases(cases)
    return cases


def cases_from_list(root: Path, listing: Path, suffixes: Sequence[str]) -> list[Case]:
    """The cases a list names, in its order: a CSV file whose header names the columns
    ``image`` (more channels: ``image1``, ``image2``..) and ``mask`` (or ``label``; an empty
    cell: unlabelled), or a Medical Segmentation Decathlon ``dataset.json`` (its ``training``
    entries: ``{"image": path or [paths], "label": path}``). Paths are relative to ``root``
    (or absolute). A listed image that is not there may have been split into channels
    ``name_0000``, ``name_0001``.. (nnU-Net's layout): those are its channels. A case's name is
    its (first) image's name without the suffix.
    """
    if not listing.is_file():
        raise DataError(f"{listing}: list of image/mask pairs not found")
    if listing.suffix.lower() == ".json":
        rows = _json_rows(listing)
    elif listing.suffix.lower() == ".csv":
        rows = _csv_rows(listing)
    else:
        raise DataError(
            f"{listing}: a list of image/mask pairs is a .csv file (header image,mask) or a "
            "dataset.json (Medical Segmentation Decathlon)"
        )
    if not rows:
        raise DataError(f"{listing}: lists no images")
    cases: list[Case] = []
    for where, image_cells, label_cell in rows:
        found = f"listed in {listing}, {where}"
        if len(image_cells) == 1:
            images = _listed_image(root, image_cells[0], suffixes, found)
        else:
            images = tuple(_listed_file(root, cell, suffixes, found) for cell in image_cells)
        label = None if not label_cell else _listed_file(root, label_cell, suffixes, found)
        parts = split_suffix(_resolve(root, image_cells[0]).name, suffixes)
        cases.append(Case(parts[0] if parts else image_cells[0], images, label))
    check_cases(cases)
    return cases


def check_cases(cases: Sequence[Case]) -> None:
    """Unique case names, and as many image files (channels) in every case."""
    seen: dict[str, Case] = {}
    for case in cases:
        other = seen.setdefault(case.name, case)
        if other is not case:
            raise DataError(
                f"{case.images[0]}: its case name {case.name!r} is also that of "
                f"{other.images[0]} (case names must be unique)"
            )
    first = cases[0] if cases else None
    for case in cases:
        if first is not None and len(case.images) != len(first.images):
            raise DataError(
                f"{case.images[0]}: case {case.name!r} has {len(case.images)} image file(s) "
                f"(channels), but {first.name!r} has {len(first.images)}"
            )


def split_suffix(filename: str, suffixes: Sequence[str]) -> tuple[str, str] | None:
    """(name, suffix) for the longest of ``suffixes`` ``filename`` ends with (any case); None
    when it ends with none."""
    lower = filename.lower()
    matched = [s for s in suffixes if lower.endswith(s.lower()) and len(filename) > len(s)]
    if not matched:
        return None
    suffix = max(matched, key=len)
    return filename[: -len(suffix)], filename[-len(suffix) :]


def list_files(folder: Path, suffixes: Sequence[str]) -> dict[str, Path]:
    """Files of ``folder`` with one of ``suffixes`` by name (without the suffix); two files
    with one name are an error. Hidden files (``.name``, such as the ``._name.png`` that macOS
    copies leave) and folders are skipped."""
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        parts = split_suffix(path.name, suffixes)
        if parts is None or path.name.startswith(".") or not path.is_file():
            continue
        name = parts[0]
        if name in found:
            raise DataError(f"{path}: two files share the name {name!r} ({found[name].name})")
        found[name] = path
    return found


def _suffix_text(suffixes: Sequence[str]) -> str:
    return ", ".join(dict.fromkeys(s.lstrip(".").lower() for s in suffixes))


class _MaskRule:
    """The label name for an image name: ``mask_name`` formatted with the id that
    ``image_pattern`` takes from the image name."""

    def __init__(
        self, mask_name: str | None, image_pattern: str | None, suffixes: Sequence[str]
    ) -> None:
        self.mask_name, self.pattern_text, self.suffixes = mask_name, image_pattern, suffixes
        if mask_name is not None:
            expected = "a name with {id} (and no other {...}), e.g. '{id}_manual1'"
            try:
                fields = {f for _, f, _, _ in string.Formatter().parse(mask_name) if f is not None}
                mask_name.format(id="0")
            except (ValueError, IndexError, KeyError) as exc:
                raise InvalidArgumentError("mask_name", mask_name, f"{expected} ({exc})") from exc
            if fields != {"id"}:
                raise InvalidArgumentError("mask_name", mask_name, expected)
        self.pattern: re.Pattern[str] | None = None
        if image_pattern is not None:
            expected = (
                r"a regular expression with one group, or one named id, e.g. '(\d+)_training'"
            )
            try:
                self.pattern = re.compile(image_pattern)
            except re.error as exc:
                raise InvalidArgumentError(
                    "image_pattern", image_pattern, f"{expected} ({exc})"
                ) from exc
            if "id" not in self.pattern.groupindex and self.pattern.groups != 1:
                raise InvalidArgumentError(
                    "image_pattern", image_pattern, f"{expected} ({self.pattern.groups} groups)"
                )

    def settings(self) -> str:
        """The rule as given, for messages: ``mask_name '..', image_pattern '..'``."""
        given = [("mask_name", self.mask_name), ("image_pattern", self.pattern_text)]
        return ", ".join(f"{key} '{value}'" for key, value in given if value is not None)

    def label_name(self, name: str, image: Path) -> str:
        image_id = name
        if self.pattern is not None:
            match = self.pattern.fullmatch(name)
            if match is None:
                raise DataError(
                    f"{image}: its name {name!r} does not match image_pattern "
                    f"'{self.pattern_text}' (the whole name without the suffix must match), "
                    f"so no mask name '{self.mask_name or '{id}'}' can be made from it"
                )
            image_id = match.group("id" if "id" in self.pattern.groupindex else 1) or ""
        return (self.mask_name or "{id}").format(id=image_id)

    def looked_for(self, wanted: str) -> str:
        if not self.settings():
            return ""
        suffixes = _suffix_text(self.suffixes).replace(" ", "")
        return f" (looked for {wanted}.{{{suffixes}}} by {self.settings()})"

    def unmatched(self) -> str:
        if not self.settings():
            return ""
        return f" (no image name gives its name by {self.settings()})"


def _channel_groups(images: dict[str, Path]) -> dict[str, tuple[Path, ...]]:
    """Image files ``case_0000``.. grouped by case, channels in order, checked: numbered
    0..n-1, as many for every case."""
    channels: dict[str, dict[int, Path]] = {}
    for name, path in images.items():
        match = CHANNEL.fullmatch(name)
        if match is None:
            raise DataError(
                f"{path}: no channel number at the end of its name (expected case_0000, "
                "case_0001.. for channel_suffix)"
            )
        channels.setdefault(match["case"], {})[int(match["channel"])] = path
    groups: dict[str, tuple[Path, ...]] = {}
    for case in sorted(channels):
        numbers = sorted(channels[case])
        first = channels[case][numbers[0]]
        if numbers != list(range(len(numbers))):
            raise DataError(
                f"{first.parent / case}: case {case!r} has channels "
                f"{', '.join(f'{n:04d}' for n in numbers)}; expected 0000..{len(numbers) - 1:04d}"
            )
        groups[case] = tuple(channels[case][n] for n in numbers)
    reference = next(iter(groups), None)
    for case, files in groups.items():
        if reference is not None and len(files) != len(groups[reference]):
            raise DataError(
                f"{files[0].parent / case}: case {case!r} has {len(files)} channel(s), but "
                f"{reference!r} has {len(groups[reference])}"
            )
    return groups


def _resolve(root: Path, cell: str) -> Path:
    path = Path(cell.strip()).expanduser()
    return path if path.is_absolute() else root / path


def _listed_file(root: Path, cell: str, suffixes: Sequence[str], found: str) -> Path:
    path = _resolve(root, cell)
    if split_suffix(path.name, suffixes) is None:
        raise DataError(f"{path}: not an accepted file ({_suffix_text(suffixes)}; {found})")
    if not path.is_file():
        raise DataError(f"{path}: file not found ({found})")
    return path


def _listed_image(root: Path, cell: str, suffixes: Sequence[str], found: str) -> tuple[Path, ...]:
    """The listed file, else its channel files ``name_0000``, ``name_0001``.. next to it."""
    path = _resolve(root, cell)
    parts = split_suffix(path.name, suffixes)
    if parts is None or path.exists():
        return (_listed_file(root, cell, suffixes, found),)
    name, suffix = parts
    channels: list[Path] = []
    while (channel := path.with_name(f"{name}_{len(channels):04d}{suffix}")).is_file():
        channels.append(channel)
    if not channels:
        raise DataError(
            f"{path}: file not found, nor its channel files {name}_0000{suffix}.. ({found})"
        )
    return tuple(channels)


Row = tuple[str, list[str], str | None]  # where (for messages), image cells, label cell


def _csv_rows(listing: Path) -> list[Row]:
    try:
        with listing.open(newline="", encoding="utf-8-sig") as file:
            lines = list(csv.reader(file))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{listing}: cannot be read as a CSV file: {exc}") from exc
    lines = [line for line in lines if any(cell.strip() for cell in line)]
    if not lines:
        raise DataError(f"{listing}: empty (expected a header line image,mask and one per pair)")
    header = [cell.strip().lower() for cell in lines[0]]
    image_columns = _image_columns(listing, header)
    label_columns = [i for i, name in enumerate(header) if name in ("mask", "label")]
    if len(label_columns) > 1:
        raise DataError(f"{listing}: both a mask and a label column; give one")
    rows: list[Row] = []
    for number, line in enumerate(lines[1:], start=2):
        cells = [*line, *[""] * (len(header) - len(line))]
        images = [cells[i].strip() for i in image_columns]
        if not all(images):
            column = header[image_columns[[bool(c) for c in images].index(False)]]
            raise DataError(f"{listing}, line {number}: no file in the {column} column")
        label = cells[label_columns[0]].strip() if label_columns else None
        rows.append((f"line {number}", images, label or None))
    return rows


def _image_columns(listing: Path, header: list[str]) -> list[int]:
    """Column numbers of ``image`` (or ``image0``), ``image1``.. in channel order."""
    numbered: dict[int, int] = {}
    for column, name in enumerate(header):
        match = re.fullmatch(r"image(\d*)", name)
        if match is None:
            continue
        channel = int(match[1] or 0)
        if channel in numbered:
            raise DataError(f"{listing}: two columns for image channel {channel} ({name})")
        numbered[channel] = column
    if not numbered:
        raise DataError(
            f"{listing}: no image column in the first line ({','.join(header)}); expected a "
            "header line naming the columns image and mask, e.g. image,mask"
        )
    if sorted(numbered) != list(range(len(numbered))):
        raise DataError(
            f"{listing}: image columns for channels {sorted(numbered)}; expected image, "
            f"image1.. image{len(numbered) - 1}"
        )
    return [numbered[c] for c in sorted(numbered)]


def _json_rows(listing: Path) -> list[Row]:
    try:
        data: Any = json.loads(listing.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise DataError(f"{listing}: cannot be read as JSON: {exc}") from exc
    entries = data.get("training") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise DataError(
            f"{listing}: no training list (expected a Decathlon dataset.json: "
            '"training": [{"image": "./imagesTr/x.nii.gz", "label": "./labelsTr/x.nii.gz"}, ...])'
        )
    rows: list[Row] = []
    for index, entry in enumerate(entries):
        where = f"training[{index}]"
        image = entry.get("image") if isinstance(entry, dict) else None
        images = [image] if isinstance(image, str) else image
        label = entry.get("label") if isinstance(entry, dict) else None
        if (
            not isinstance(images, list)
            or not images
            or not all(isinstance(p, str) and p.strip() for p in images)
            or not (label is None or isinstance(label, str))
        ):
            raise DataError(
                f"{listing}: {where} is {json.dumps(entry)[:120]}; expected "
                '{"image": path or [paths], "label": path}'
            )
        rows.append((where, images, label or None))
    return rows
