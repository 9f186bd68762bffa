"""Shared machinery of the dataset converters (``datasets/*_converter.py``).

Each layout module (``cars196``, ``cub200``, ``sop``, ``folder``, ``tfds_source``) turns a
download into ``{split: [Example, ...]}`` plus class names; ``convert`` does the rest for all
of them: image reading (full decode, optional box crop, resize policy) in a thread pool, a
progress bar, the list of unreadable images (fatal unless ``--skip_bad``), writing through
``dmltf.data.DatasetWriter`` (or the DVML reference layout, ``dvml.py``) and the final table
of images and classes per split next to the canonical counts of METHODS.md section 7.

Labels are 0-based global class ids (e.g. Cars196 class 99 -> label 98), so a zero-shot test
split keeps ids disjoint from the train split; ``class_names[label]`` names each one.

Example:
    >>> from dmltf.data.raw.common import CANONICAL, split_table
    >>> table, warnings = split_table({"train": (98, 8054), "test": (98, 8130)}, CANONICAL["cars196"])
    >>> print(warnings[0])
    WARNING: split 'test' has 8,130 images / 98 classes; the standard split has 8,131 / 98
"""
import argparse
import collections
import concurrent.futures
import dataclasses
import io
import os
import sys
import time

import numpy as np
from PIL import Image

# METHODS.md section 7: (classes, images) per zero-shot split.
CANONICAL = {
    "cars196": {"train": (98, 8054), "test": (98, 8131)},
    "cub200": {"train": (100, 5864), "test": (100, 5924)},
    "sop": {"train": (11318, 59551), "test": (11316, 60502)},
}
RESIZE_POLICIES = ("square", "short_side", "none")
# Pillow filters; "cv2_linear" is OpenCV's INTER_LINEAR, what the DVML / HDML converters used.
RESAMPLERS = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "lanczos": Image.LANCZOS,
              "cv2_linear": None}


class LayoutError(ValueError):
    """A raw download lacks an expected file, folder, variable or field."""


class BadImagesError(RuntimeError):
    """Some images could not be read; ``bad`` lists (name, reason)."""

    def __init__(self, bad):
        self.bad = list(bad)
        lines = "\n".join(f"  {name}: {reason}" for name, reason in self.bad)
        super().__init__(f"{len(self.bad)} unreadable image(s):\n{lines}\n"
                         "Replace or remove them, or pass --skip_bad to leave them out.")


@dataclasses.dataclass(frozen=True)
class Example:
    """One image to convert.

    ``source`` is a file path or encoded image bytes; ``name`` identifies it in messages
    (defaults to the path); ``box`` is a crop (left, upper, right, lower) in pixels, used with
    ``--crop_bbox``; ``extra_labels`` are ``(keyword, int)`` pairs passed to the writer.
    """

    source: object
    label: int
    name: str = ""
    box: tuple = None
    extra_labels: tuple = ()

    @property
    def where(self):
        return self.name or str(self.source)


def require(path, what, is_dir=False):
    """Returns ``path`` if it exists (as a folder when ``is_dir``), else a LayoutError."""
    if (os.path.isdir if is_dir else os.path.isfile)(path):
        return path
    raise LayoutError(f"{what} not found: expected {'folder' if is_dir else 'file'} {path}")


def find_first(candidates, what):
    """The first existing path of ``candidates``, else a LayoutError listing where it looked."""
    for path in candidates:
        if os.path.exists(path):
            return path
    raise LayoutError(f"{what} not found; looked for: " + ", ".join(candidates))


def read_table(path, columns, header=None):
    """Rows of a whitespace-separated text file as tuples of ``columns`` strings.

    The last column takes the rest of the line (paths may hold spaces). ``header``, when
    given, must equal the first line's words.
    """
    rows = []
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    if header is not None:
        if not lines or lines[0].split() != list(header):
            found = lines[0] if lines else "an empty file"
            raise LayoutError(f"{path}: expected the header '{' '.join(header)}', found '{found}'")
        lines = lines[1:]
    start = 2 if header is not None else 1
    for number, line in enumerate(lines, start):
        if not line.strip():
            continue
        words = line.split(None, columns - 1)
        if len(words) != columns:
            raise LayoutError(f"{path}:{number}: expected {columns} columns, got '{line}'")
        rows.append(tuple(words))
    return rows


def parse_int(text, where):
    try:
        return int(text)
    except ValueError:
        raise LayoutError(f"{where}: expected an integer, got {text!r}") from None


def zero_shot_split(examples, num_train_classes):
    """{"train": labels < num_train_classes, "test": the rest}, each sorted by (label, name)."""
    ordered = sorted(examples, key=lambda e: (e.label, e.where))
    return {"train": [e for e in ordered if e.label < num_train_classes],
            "test": [e for e in ordered if e.label >= num_train_classes]}


# -- images --------------------------------------------------------------------------------
# Pillow modes stored as one channel by default (a tree of only such images stays grayscale).
GRAY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
# Pillow formats whose pixels a JPEG re-encoding loses (the notice of ``plan``).
LOSSLESS_FORMATS = frozenset({"PNG", "BMP", "PPM", "TIFF", "GIF", "TGA"})
_PIL_MODES = {1: "L", 3: "RGB"}


@dataclasses.dataclass(frozen=True)
class ImagePolicy:
    """How a source image becomes what is stored.

    ``resize``: ``square`` (size x size, aspect ratio not kept, as DVML), ``short_side`` (short
    side = size, aspect kept) or ``none``. ``channels``: 1 (grayscale, Pillow's ``L``) or 3
    (RGB); None until :func:`plan` has looked at the images (1 when every image is grayscale).
    ``native_shape``: (H, W) of every output when all outputs share it (set by :func:`plan`).
    ``keep_jpeg``: store a JPEG file's own bytes when nothing changes its pixels (no resize, no crop, already in the stored mode), so nothing is re-encoded.
    """

    resize: str = "short_side"
    size: int = 256
    resample: str = "bilinear"
    crop_bbox: bool = False
    keep_jpeg: bool = False
    channels: int = 3
    native_shape: tuple = None

    def __post_init__(self):
        if self.resize not in RESIZE_POLICIES:
            raise ValueError(f"unknown resize policy {self.resize!r}; valid: {', '.join(RESIZE_POLICIES)}")
        if self.resample not in RESAMPLERS:
            raise ValueError(f"unknown resampler {self.resample!r}; valid: {', '.join(RESAMPLERS)}")
        if self.resize != "none" and self.size < 1:
            raise ValueError(f"--size must be >= 1, got {self.size}")
        if self.channels not in (None, 1, 3):
            raise ValueError(f"--channels must be 1 or 3, got {self.channels}")
        if self.resample == "cv2_linear":
            try:
                import cv2  # noqa: F401
            except ImportError:
                raise ValueError("--resample cv2_linear needs OpenCV: pip install opencv-python-headless") from None

    @property
    def image_shape(self):
        """(H, W, C) when every output has one shape, else None."""
        channels = self.channels or 3
        if self.resize == "square":
            return (self.size, self.size, channels)
        if self.native_shape is not None:
            return (*self.native_shape, channels)
        return None

    def output_size(self, width, height):
        """(width, height) of what a (cropped) ``width`` x ``height`` source becomes."""
        if self.resize == "none":
            return width, height
        if self.resize == "square":
            return self.size, self.size
        if height <= width:
            return max(1, int(round(width * self.size / height))), self.size
        return self.size, max(1, int(round(height * self.size / width)))

    def crop_box(self, example, width, height):
        """The pixel box ``--crop_bbox`` cuts from a ``width`` x ``height`` image, or None (whole image)."""
        if not (self.crop_bbox and example.box is not None):
            return None
        left, upper, right, lower = (int(round(v)) for v in example.box)
        box = (max(left, 0), max(upper, 0), min(right, width), min(lower, height))
        if box[2] <= box[0] or box[3] <= box[1]:
            raise ValueError(f"bounding box {example.box} is empty inside the {width}x{height} image")
        return None if box == (0, 0, width, height) else box

    def load(self, example):
        """uint8 [H, W, C] array (C = ``channels``), or the source's JPEG bytes (``keep_jpeg``);
        raises if unreadable."""
        mode = _PIL_MODES[self.channels or 3]
        data = _read_bytes(example)
        with Image.open(io.BytesIO(data)) as img:
            img.load()  # full decode: truncated or corrupt data fails here, not in training
            unchanged_jpeg = img.format == "JPEG" and img.mode == mode
            pixels = img.convert(mode)
        box = self.crop_box(example, pixels.width, pixels.height)
        if box is not None:
            pixels, unchanged_jpeg = pixels.crop(box), False
        if self.resize == "none":
            if self.keep_jpeg and unchanged_jpeg:
                return data
            array = np.asarray(pixels)
        else:
            array = self._resize(pixels)
        return array.reshape(array.shape[0], array.shape[1], -1)

    def _resize(self, image):
        out_w, out_h = self.output_size(*image.size)
        if self.resample == "cv2_linear":
            import cv2

            return cv2.resize(np.asarray(image), (out_w, out_h), interpolation=cv2.INTER_LINEAR)
        return np.asarray(image.resize((out_w, out_h), RESAMPLERS[self.resample]))


def _read_bytes(example):
    if isinstance(example.source, (bytes, bytearray)):
        return bytes(example.source)
    with open(example.source, "rb") as f:
        return f.read()


def _header(example):
    """(width, height, mode, format) from the image header only (no pixel decode)."""
    source = example.source
    with Image.open(io.BytesIO(bytes(source)) if isinstance(source, (bytes, bytearray)) else source) as img:
        return img.width, img.height, img.mode, img.format


def plan(splits, args, policy, stream=None):
    """``policy`` completed from the images' headers (read before any pixel is decoded):
    ``channels`` (``--channels``, else 1 when every image is grayscale, else 3) and the one
    output shape when all images share it (raw encoding, or grayscale JPEG). Raw encoding
    stores one shape for all images: a LayoutError names the first image of another shape.
    Prints a one-line ``note:`` on ``stream`` (stderr) when images are upscaled, and when
    lossless images (PNG, ...) are re-encoded as JPEG. Unreadable headers are left to the conversion (``--skip_bad``)."""
    stream = stream or sys.stderr
    # Streamed: a TFDS split's examples hold their bytes, so none is kept past its header.
    examples = (e for split in splits.values() for e in split)
    first, upscaled, lossless, outputs, uniform, gray, count = None, None, {}, None, True, True, 0
    for example, (header, error) in ordered_map(_header, examples, getattr(args, "workers", 1)):
        if error:
            continue
        width, height, mode, fmt = header
        count, gray = count + 1, gray and mode in GRAY_MODES
        try:
            box = policy.crop_box(example, width, height)
        except ValueError:
            continue  # reported by the conversion, with the image's name
        if box is not None:
            width, height = box[2] - box[0], box[3] - box[1]
        out = policy.output_size(width, height)
        if out[0] > width or out[1] > height:
            upscaled = (upscaled or (0, (example.where, (width, height), out)))
            upscaled = (upscaled[0] + 1, upscaled[1])
        if args.encoding == "jpeg" and fmt in LOSSLESS_FORMATS:
            lossless[fmt] = lossless.get(fmt, 0) + 1
        if first is None:
            first, outputs = (example.where, out), out
        elif out != outputs:
            uniform = False
        if not uniform and args.encoding == "raw":
            size = lambda wh: f"{wh[0]}x{wh[1]}"  # noqa: E731
            hint = "" if policy.resize == "square" else " and needs --resize square"
            resized = "" if policy.resize == "none" else f" after --resize {policy.resize}"
            raise LayoutError(f"--encoding raw stores one image shape per split{hint} (or --encoding jpeg, which "
                              f"keeps each image's shape): {example.where} is {size(out)}{resized}, "
                              f"{first[0]} {size(first[1])}")
    channels = policy.channels or (1 if count and gray else 3)
    if upscaled:
        n, (where, (w, h), (ow, oh)) = upscaled
        print(f"note: {n:,} of {count:,} images are upscaled (e.g. {where}: {w}x{h} -> {ow}x{oh}); "
              f"--resize none keeps their native size", file=stream)
    if lossless:
        kinds = ", ".join(f"{n:,} {fmt}" for fmt, n in sorted(lossless.items()))
        print(f"note: {kinds} image(s) stored losslessly are re-encoded as JPEG (quality "
              f"{getattr(args, 'jpeg_quality', 95)}); --encoding raw keeps their pixels", file=stream)
    # One shape for all: recorded (raw needs it; a grayscale JPEG split is then read with 1 channel).
    keep = uniform and outputs is not None and (args.encoding == "raw" or channels == 1)
    native = (outputs[1], outputs[0]) if keep else None
    return dataclasses.replace(policy, channels=channels, native_shape=native)


def _attempt(fn, example):
    try:
        return fn(example), None
    except Exception as e:  # noqa: BLE001 - every failure is reported with the image's name
        return None, f"{type(e).__name__}: {e}"


def ordered_map(fn, examples, workers):
    """Yields (example, (result, error)) in input order, at most ~4 x workers in flight."""
    if workers <= 1:
        for example in examples:
            yield example, _attempt(fn, example)
        return
    # Threads, not processes: Pillow releases the GIL while decoding and resizing, and
    # nothing is pickled.
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        pending = collections.deque()
        for example in examples:
            pending.append((example, pool.submit(_attempt, fn, example)))
            if len(pending) >= 4 * workers:
                example, future = pending.popleft()
                yield example, future.result()
        while pending:
            example, future = pending.popleft()
            yield example, future.result()


class Progress:
    """A one-line progress bar on stderr (redrawn on a terminal, a line per 10% otherwise)."""

    def __init__(self, total, desc, stream=None):
        self.total, self.desc, self.done = max(int(total), 1), desc, 0
        self.stream = stream or sys.stderr
        self.tty = getattr(self.stream, "isatty", lambda: False)()
        self.start = self.last = time.monotonic()
        self.last_decile = 0

    def update(self, n=1):
        self.done += n
        now = time.monotonic()
        decile = 10 * self.done // self.total
        if (self.tty and now - self.last > 0.2) or (not self.tty and decile > self.last_decile):
            self.last, self.last_decile = now, decile
            self._draw(now)

    def close(self):
        if self.tty:
            self._draw(time.monotonic())
            self.stream.write("\n")
        elif self.last_decile < 10:  # the last line was not drawn yet
            self._draw(time.monotonic())

    def _draw(self, now):
        filled = 30 * self.done // self.total
        rate = self.done / max(now - self.start, 1e-9)
        line = f"{self.desc} [{'#' * filled}{'.' * (30 - filled)}] {self.done}/{self.total} {rate:.0f} img/s"
        self.stream.write(("\r" + line) if self.tty else line + "\n")
        self.stream.flush()


# -- reporting -----------------------------------------------------------------------------
def split_table(counts, canonical=None):
    """Text table of {split: (classes, images)} beside the canonical counts, and warnings."""
    canonical = canonical or {}
    rows = [("split", "images", "classes", "canonical images", "canonical classes")]
    warnings = []
    for split, (classes, images) in counts.items():
        want = canonical.get(split)
        rows.append((split, f"{images:,}", f"{classes:,}", f"{want[1]:,}" if want else "-",
                     f"{want[0]:,}" if want else "-"))
        if want and (classes, images) != want:
            warnings.append(f"WARNING: split {split!r} has {images:,} images / {classes:,} classes; "
                            f"the standard split has {want[1]:,} / {want[0]:,}")
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    text = "\n".join("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))
                     for r in rows)
    return text, warnings


# -- the conversion ------------------------------------------------------------------------
# Defaults per output layout; the DVML layout's values are fixed by its reference file.
LAYOUT_DEFAULTS = {
    "dmltf": {"format": "hdf5", "encoding": "jpeg", "resize": "short_side", "size": 256, "channels": None},
    "dvml": {"format": "hdf5", "encoding": "raw", "resize": "square", "size": 256, "channels": 3},
}


def make_parser(description, dvml_layout=False, root_default=None):
    """argparse parser with ``--root`` and the options every converter shares."""
    parser = argparse.ArgumentParser(description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", required=root_default is None, default=root_default,
                        help="folder of the raw download (see above)"
                             + (f"; default {root_default}" if root_default else ""))
    parser.add_argument("--output", required=True, help="output .h5 file (hdf5) or directory (tfrecord)")
    parser.add_argument("--format", choices=("hdf5", "tfrecord"), help="default hdf5")
    parser.add_argument("--encoding", choices=("raw", "jpeg"),
                        help="raw: decoded uint8 pixels, one shape for all images (native by default, else "
                             "--resize square); jpeg: encoded bytes (default; JPEG files kept byte for byte "
                             "with --resize none)")
    parser.add_argument("--resize", choices=RESIZE_POLICIES,
                        help="square: size x size, aspect not kept (DVML); short_side (default for jpeg): "
                             "short side = size; none (default for raw): original pixels")
    parser.add_argument("--channels", type=int, choices=(1, 3),
                        help="1: grayscale, 3: RGB; default: what the images are (1 when every image is "
                             "grayscale, else 3)")
    parser.add_argument("--size", type=int, help="pixels for --resize square / short_side (default 256)")
    parser.add_argument("--resample", choices=tuple(RESAMPLERS),
                        help="resize filter (default bilinear; cv2_linear = OpenCV INTER_LINEAR as the "
                             "DVML converter, the default of --layout dvml when OpenCV is installed)")
    parser.add_argument("--jpeg_quality", type=int, default=95, help="when images are (re-)encoded")
    parser.add_argument("--crop_bbox", action="store_true", help="crop each image to its annotated box first")
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1),
                        help="image decoding threads")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")
    parser.add_argument("--verbose", action="store_true",
                        help="keep TensorFlow's native start-up notices on stderr (see dmltf/startup.py)")
    parser.add_argument("--skip_bad", action="store_true",
                        help="leave unreadable images out (count stored in the metadata) instead of failing")
    if dvml_layout:
        parser.add_argument("--layout", choices=tuple(LAYOUT_DEFAULTS), default="dmltf",
                            help="dvml: the HDF5 file of the DVML reference (images uint8 N x 3 x 256 x 256, "
                                 "targets int32 N x 1, Fuel split attribute); fixes format/encoding/resize/size")
    return parser


def resolve_args(args):
    """Fills layout defaults and rejects contradictory options, before any work is done."""
    layout = getattr(args, "layout", "dmltf")
    if layout == "dmltf" and args.encoding == "raw" and args.resize is None:
        args.resize = "none"  # the native size, when all images share one (checked by plan())
    for key, value in LAYOUT_DEFAULTS[layout].items():
        given = getattr(args, key, None)
        if given is None:
            setattr(args, key, value)
        elif layout == "dvml" and given != value:
            raise LayoutError(f"--layout dvml fixes --{key} {value} (the reference file's); got {given}")
    if os.path.lexists(args.output) and not args.overwrite:
        raise FileExistsError(f"{args.output} already exists; pass --overwrite to replace it")
    resample = args.resample or "bilinear"
    if layout == "dvml" and args.resample is None:
        try:
            import cv2  # noqa: F401

            resample = "cv2_linear"
        except ImportError:
            print("note: OpenCV is not installed; resizing with Pillow bilinear, so pixels differ "
                  "slightly from the DVML reference file (pip install opencv-python-headless)", file=sys.stderr)
    return ImagePolicy(resize=args.resize, size=args.size, resample=resample, crop_bbox=args.crop_bbox,
                       keep_jpeg=args.encoding == "jpeg", channels=getattr(args, "channels", None))


def _open_writer(args, class_names, metadata, num_examples):
    if getattr(args, "layout", "dmltf") == "dvml":
        from dmltf.data.raw.dvml import DvmlWriter

        return DvmlWriter(args.output, num_examples, overwrite=args.overwrite)
    from dmltf.data import DatasetWriter

    return DatasetWriter(args.output, format=args.format, encoding=args.encoding, class_names=class_names,
                         metadata=metadata, overwrite=args.overwrite, jpeg_quality=args.jpeg_quality)


def convert(splits, class_names, args, policy, metadata, canonical=None, out=None):
    """Writes ``splits`` ({name: sized iterable of Example}) to ``args.output``.

    ``policy`` comes from ``resolve_args(args)``; :func:`plan` completes it from the images'
    headers first (channels, one shape, notices). Returns {split: (classes, images)} as
    written. Raises BadImagesError, with nothing left at ``args.output``, when an image is
    unreadable and ``args.skip_bad`` is off; with it, they are left out and counted in the
    metadata (``skipped_images``, ``skipped_paths``).
    """
    out = out or sys.stdout
    policy = plan(splits, args, policy)
    metadata = dict(metadata, resize=policy.resize, size=None if policy.resize == "none" else policy.size,
                    resample=policy.resample, crop_bbox=policy.crop_bbox, channels=policy.channels)
    total = sum(len(examples) for examples in splits.values())
    counts, bad = {}, []
    with _open_writer(args, class_names, metadata, total) as writer:
        for split, examples in splits.items():
            writing = args.skip_bad or not bad  # after a fatal failure only the full list matters
            if writing:
                writer.begin_split(split, num_examples=None if args.skip_bad else len(examples),
                                   image_shape=policy.image_shape)
            progress, labels, added = Progress(len(examples), f"writing {split}"), set(), 0
            for example, (payload, error) in ordered_map(policy.load, examples, args.workers):
                progress.update()
                if error:
                    bad.append((example.where, error))
                    writing = writing and args.skip_bad
                elif writing:
                    writer.add(payload, example.label, **dict(example.extra_labels))
                    labels.add(example.label)
                    added += 1
            progress.close()
            if writing:
                writer.end_split()
                counts[split] = (len(labels), added)
        if bad and not args.skip_bad:
            raise BadImagesError(bad)  # leaves the with-block: the writer discards its output
        writer.metadata.update(skipped_images=len(bad), skipped_paths=sorted(name for name, _ in bad))
    for name, reason in bad:
        print(f"skipped unreadable image {name}: {reason}", file=sys.stderr)
    table, warnings = split_table(counts, canonical)
    print(table, file=out)
    for warning in warnings:
        print(warning, file=out)
    if bad:
        print(f"skipped {len(bad)} unreadable image(s) (metadata: skipped_images)", file=out)
    print(f"wrote {args.output}", file=out)
    return counts


def run_cli(parser, build, argv=None):
    """CLI body shared by the converters: ``build(args) -> (splits, class_names, metadata, canonical)``.

    Expected failures (missing files, bad images, existing output, invalid values; all
    ValueErrors name the file or example) print one ``error:`` message and return 1 instead
    of a traceback.
    """
    args = parser.parse_args(argv)
    if args.format == "tfrecord":  # only TFRecords need TensorFlow: started without its notices
        from dmltf import startup

        startup.start_tensorflow(argv)
    try:
        policy = resolve_args(args)  # option conflicts and an existing output fail before any work
        splits, class_names, metadata, canonical = build(args)
        convert(splits, class_names, args, policy, metadata, canonical)
    except (ValueError, BadImagesError, FileExistsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0
