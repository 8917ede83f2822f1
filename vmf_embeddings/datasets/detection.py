"""Object-detection datasets (few-shot detection: RepMet on torchvision's Faster R-CNN): PASCAL VOC read from
the official VOCdevkit layout, and a synthetic shapes set built in memory.

Loaders return `DetectionData` (three `DetectionSplit`s plus the class names), not `DataSplits`: a detection
image has any number of boxes, so there is no per-image label. The detection runner reads them as

    data = load_voc("data/voc")                       # or hydra's instantiate(cfg.dataset.loader)
    image = data.train.load_image(i)                  # uint8 3 x H x W (RGB)
    target = data.train.target(i, label_offset=1)     # {"boxes": float32 n x 4, "labels": int64 n, "difficult": bool n}
    base = data.train.select_classes(data.base_classes)  # few-shot: keep only base-class boxes

Conventions (every split, every loader):

- `boxes`: float32 (n_i, 4), absolute pixel `x1, y1, x2, y2` in the continuous coordinates torchvision's
  detectors use (the image spans [0, W] x [0, H]; a box covers pixel columns x1 .. x2 - 1). VOC annotations
  are inclusive 1-based pixel indices (`xmin=1, xmax=W` is the whole width), so the reader stores
  `x1 = xmin - 1, y1 = ymin - 1, x2 = xmax, y2 = ymax` -- detectron2's VOC reader
  (`detectron2/data/datasets/pascal_voc.py`) does the same; torchvision has no VOC box converter
  (`VOCDetection` returns the XML as strings and its detection reference reads only COCO). py-faster-rcnn
  subtracted 1 from all four (pixel-index boxes, widths computed as x2 - x1 + 1); that convention is not used.
  VOC's evaluation (devkit `VOCevaldet`, IoU on inclusive pixel boxes) gives the same overlap for our boxes,
  since width = x2 - x1 here = xmax - xmin + 1 there.
- `labels`: int64 (n_i,), class ids 0..C-1 in `DetectionData.class_names` order. There is no background id:
  torchvision's detectors reserve 0 for background, so pass `target(i, label_offset=1)` (or add 1) to them.
- `difficult`: bool (n_i,): VOC's `<difficult>` flag (a missing tag reads as 0, as in mmdetection's reader);
  the VOC metric ignores difficult boxes (neither true nor false positives). All False for shapes.
- `ids`: the image ids (VOC: the ImageSets id, e.g. `000005`, `2008_000002`; unique across VOC years).
- `sizes`: (height, width) per image: VOC's `<size>`, checked against the JPEG header when
  `verify_files=true`; in-memory images: their tensor shape.

PASCAL VOC (`load_voc`): `<dataset_path>/VOCdevkit/VOC<year>/{JPEGImages/<id>.jpg, Annotations/<id>.xml,
ImageSets/Main/<set>.txt}` (the layout the official tars extract to, and torchvision's `VOCDetection`
downloads to; `<dataset_path>/VOC<year>` is accepted too). voc2007 = VOC2007 trainval for training and
VOC2007 test for testing; voc0712 = VOC2007 trainval + VOC2012 trainval for training, VOC2007 test for
testing (VOC2012 test annotations were never released). Validation is a class-agnostic, seeded (`seed`)
`val_fraction` of the training images, so checkpoints are selected without looking at test. The 20 classes are
in the standard order (`VOC_CLASSES`); `VOC_NOVEL_SPLITS` are the three base/novel splits of few-shot
detection on VOC (Kang et al. 2019, TFA), picked with `novel_split=1|2|3` (`DetectionData.novel_classes`).
`python scripts/prepare_voc.py DIR` extracts the official tars; `download=true` fetches them through
torchvision (the parsing stays ours).

The XML is parsed with `defusedxml` when it is installed, else with `xml.etree.ElementTree` (the annotation
files are the user's own data; the bundled expat refuses external entities and, from 2.4.1, entity-expansion
bombs). Bad files are refused at load time in one line naming the file and the fix (`DatasetMissingError`:
no VOCdevkit, an ImageSets id without its annotation or JPEG; `DatasetInvalidError`: malformed XML, an unknown
class name, an empty box or one outside the image, a JPEG whose size differs from its annotation).

Shapes (`load_shapes_detection`): random noise canvases (`0.75 * image_size` .. `image_size` px a side,
3 channels, every pixel <= `SHAPES_BACKGROUND_MAX`) with 1-3 non-overlapping filled shapes, one class per
(shape, colour) pair (`shape_class_names`); each shape's pixels have its class colour (a channel >= 200) and
its box is exactly the tight box of those pixels. Deterministic from `seed`; each split has its own stream,
so changing `n_train` leaves val and test unchanged.
"""

from __future__ import annotations

import logging
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch.utils.data import Dataset

from vmf_embeddings.errors import ConfigError

from .base import DatasetInvalidError, DatasetMissingError, missing_dataset
from .transforms import IMAGENET_MEAN, IMAGENET_STD

try:  # hardened parser when available (the files are the user's own data either way)
    from defusedxml.ElementTree import ParseError as _ParseError
    from defusedxml.ElementTree import parse as _parse_xml
except ImportError:  # pragma: no cover - depends on the environment
    from xml.etree.ElementTree import ParseError as _ParseError
    from xml.etree.ElementTree import parse as _parse_xml

log = logging.getLogger(__name__)

#: the 20 PASCAL VOC classes in the standard order (class id = position)
VOC_CLASSES: Tuple[str, ...] = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable", "dog",
    "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)
#: novel classes of the three few-shot VOC splits (Kang et al., ICCV 2019; Wang et al., TFA, ICML 2020); the
#: other 15 classes are the base classes
VOC_NOVEL_SPLITS: Dict[int, Tuple[str, ...]] = {
    1: ("bird", "bus", "cow", "motorbike", "sofa"),
    2: ("aeroplane", "bottle", "cow", "horse", "sofa"),
    3: ("boat", "cat", "motorbike", "sheep", "sofa"),
}
#: the official archive holding each (year, image set), as the prepare script and the error messages name them
VOC_ARCHIVES: Dict[Tuple[str, str], str] = {
    ("2007", "trainval"): "VOCtrainval_06-Nov-2007.tar",
    ("2007", "test"): "VOCtest_06-Nov-2007.tar",
    ("2012", "trainval"): "VOCtrainval_11-May-2012.tar",
}
VOC_YEARS = ("2007", "2008", "2009", "2010", "2011", "2012")  # torchvision's VOCDetection years
PREPARE_VOC = ("run `python scripts/prepare_voc.py DIR --archive VOCtrainval_06-Nov-2007.tar --archive "
               "VOCtest_06-Nov-2007.tar [--archive VOCtrainval_11-May-2012.tar]` (or without --archive to "
               "download them) and set dataset.dataset_path=DIR, or set dataset.loader.download=true when online")

#: files whose headers are read in one thread; more are probed by a thread pool (I/O bound when cold)
_SERIAL_PROBES = 2000
_PROBE_THREADS = 8
_EXAMPLES = 3


# ----------------------------------------------------------------------------------------------- containers
def _bad(where: str, message: str) -> DatasetInvalidError:
    return DatasetInvalidError(f"{where}: {message}" if where else message)


@dataclass
class DetectionSplit:
    """One split of a detection dataset: per image its pixels (a file path or a uint8 3 x H x W tensor), its
    boxes, their class ids and difficult flags. See the module docstring for the conventions.

    images: list of file paths (decoded by `load_image`) or list of uint8 C x H x W tensors (variable sizes);
        not both in one split.
    boxes: list of float32 (n_i, 4) tensors, absolute pixel x1, y1, x2, y2 (0-based, x2/y2 exclusive edges).
    labels: list of int64 (n_i,) tensors, class ids 0..C-1 (no background id).
    difficult: list of bool (n_i,) tensors.
    ids: image ids (str).
    sizes: (height, width) per image; None for file-backed splits without annotation sizes (then
        `image_size` reads the file's header). Filled from the tensors for in-memory images.
    name: how errors name the split ("dataset 'voc2007' train split"); `DetectionData` fills it in.

    Lists of other array-likes are converted to these dtypes when the split is built; boxes that are not finite,
    empty (x1 >= x2 or y1 >= y2) or outside their image (when the size is known) are refused in one line.
    """

    images: list
    boxes: List[torch.Tensor]
    labels: List[torch.Tensor]
    difficult: List[torch.Tensor]
    ids: List[str]
    sizes: Optional[List[Tuple[int, int]]] = None
    name: str = ""

    def __post_init__(self) -> None:
        n = len(self.images)
        for key in ("boxes", "labels", "difficult", "ids"):
            if len(getattr(self, key)) != n:
                raise _bad(self.name, f"{len(getattr(self, key))} {key} entries but {n} images")
        if self.sizes is not None and len(self.sizes) != n:
            raise _bad(self.name, f"{len(self.sizes)} sizes but {n} images")
        kinds = {isinstance(image, torch.Tensor) for image in self.images}
        if len(kinds) > 1:
            raise _bad(self.name, "images mix tensors and file paths; use one kind per split")
        self.images = [image if isinstance(image, torch.Tensor) else str(image) for image in self.images]
        self.ids = [str(i) for i in self.ids]
        self.boxes = [torch.as_tensor(b, dtype=torch.float32).reshape(-1, 4) if not _is_empty(b)
                      else torch.zeros(0, 4, dtype=torch.float32) for b in self.boxes]
        self.labels = [_as_label_tensor(x, self.name, i) for i, x in enumerate(self.labels)]
        self.difficult = [torch.as_tensor(d, dtype=torch.bool).reshape(-1) for d in self.difficult]
        if self.in_memory:
            for i, image in enumerate(self.images):
                if image.dtype != torch.uint8 or image.ndim != 3:
                    raise _bad(self.name, f"image {self.ids[i]!r} must be a uint8 C x H x W tensor, got "
                                          f"{image.dtype} of shape {tuple(image.shape)}")
            self.sizes = [(int(image.shape[1]), int(image.shape[2])) for image in self.images]
        elif self.sizes is not None:
            self.sizes = [(int(h), int(w)) for h, w in self.sizes]
        self._check_boxes()

    def _check_boxes(self) -> None:
        for i, (b, lab, dif) in enumerate(zip(self.boxes, self.labels, self.difficult)):
            if lab.shape[0] != b.shape[0] or dif.shape[0] != b.shape[0]:
                raise _bad(self.name, f"image {self.ids[i]!r} has {b.shape[0]} boxes but {lab.shape[0]} labels "
                                      f"and {dif.shape[0]} difficult flags")
        if not self.boxes:
            return
        counts = torch.tensor([b.shape[0] for b in self.boxes])
        owner = torch.repeat_interleave(torch.arange(len(self.boxes)), counts)
        boxes = torch.cat(self.boxes)
        bad = ~torch.isfinite(boxes).all(1) | (boxes[:, 0] >= boxes[:, 2]) | (boxes[:, 1] >= boxes[:, 3])
        what = "is empty or not finite (needs x1 < x2, y1 < y2)"
        if self.sizes is not None and boxes.shape[0]:
            hw = torch.tensor(self.sizes, dtype=torch.float32)[owner]
            outside = (boxes[:, 0] < 0) | (boxes[:, 1] < 0) | (boxes[:, 2] > hw[:, 1]) | (boxes[:, 3] > hw[:, 0])
            if outside.any() and not bad.any():
                bad, what = outside, "lies outside its image"
        if bad.any():
            k = int(torch.nonzero(bad)[0])
            i = int(owner[k])
            size = f" ({self.sizes[i][1]}x{self.sizes[i][0]})" if self.sizes is not None else ""
            raise _bad(self.name, f"image {self.ids[i]!r}{size}: box {[round(v, 2) for v in boxes[k].tolist()]} "
                                  f"{what}; boxes are 0-based x1, y1, x2, y2 pixels")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def in_memory(self) -> bool:
        """True when the images are tensors (also for an empty split)."""
        return all(isinstance(image, torch.Tensor) for image in self.images)

    @property
    def n_boxes(self) -> int:
        return int(sum(b.shape[0] for b in self.boxes))

    def load_image(self, i: int) -> torch.Tensor:
        """Image `i` as a uint8 3 x H x W RGB tensor (decoded from its file, or the stored tensor itself)."""
        image = self.images[i]
        if isinstance(image, torch.Tensor):
            return image
        decoded = decode_rgb(image, self.name)
        if self.sizes is not None and tuple(decoded.shape[1:]) != tuple(self.sizes[i]):
            h, w = self.sizes[i]
            raise _bad(self.name, f"{image} is {decoded.shape[2]}x{decoded.shape[1]} but its annotation says "
                                  f"{w}x{h}; replace both files with the release's")
        return decoded

    def image_size(self, i: int) -> Tuple[int, int]:
        """(height, width) of image `i` (from `sizes`, else from the file's header)."""
        if self.sizes is not None:
            return self.sizes[i]
        return _header_size(self.images[i])[::-1]

    def target(self, i: int, label_offset: int = 0) -> Dict[str, torch.Tensor]:
        """{"boxes", "labels" (+ `label_offset`; 1 for torchvision's detectors), "difficult"} of image `i`."""
        return {"boxes": self.boxes[i], "labels": self.labels[i] + int(label_offset), "difficult": self.difficult[i]}

    def class_counts(self, n_classes: int) -> torch.Tensor:
        """Boxes per class id (int64, length `n_classes`)."""
        if not self.labels:
            return torch.zeros(n_classes, dtype=torch.int64)
        return torch.bincount(torch.cat(self.labels), minlength=n_classes)

    def subset(self, indices: Sequence[int]) -> "DetectionSplit":
        """The images at `indices`, in that order."""
        idx = [int(i) for i in indices]
        return replace(
            self,
            images=[self.images[i] for i in idx], boxes=[self.boxes[i] for i in idx],
            labels=[self.labels[i] for i in idx], difficult=[self.difficult[i] for i in idx],
            ids=[self.ids[i] for i in idx], sizes=None if self.sizes is None else [self.sizes[i] for i in idx],
        )

    def select_classes(self, classes: Sequence[int], keep_empty: bool = False, relabel: bool = False,
                       drop_mixed: bool = False) -> "DetectionSplit":
        """Only the boxes of `classes` (class ids), e.g. the base classes of few-shot base training.

        keep_empty: keep images left without boxes (their objects of other classes become background);
            default: drop them.
        relabel: renumber the kept classes 0..len(classes)-1 in the order of `classes` (for a detector head of
            that width); default: keep the original ids.
        drop_mixed: also drop every image holding a box of another class, so no unselected object is ever
            seen as background.
        """
        wanted = [int(c) for c in classes]
        if len(set(wanted)) != len(wanted):
            raise ConfigError(f"select_classes: class ids {wanted} repeat a class")
        chosen = torch.tensor(wanted, dtype=torch.int64)
        lookup = {c: k for k, c in enumerate(wanted)}
        keep, boxes, labels, difficult = [], [], [], []
        for i, (b, lab, dif) in enumerate(zip(self.boxes, self.labels, self.difficult)):
            mask = torch.isin(lab, chosen)
            if drop_mixed and not bool(mask.all()):
                continue
            if not bool(mask.any()) and not keep_empty:
                continue
            new = lab[mask]
            if relabel:
                new = torch.tensor([lookup[int(c)] for c in new.tolist()], dtype=torch.int64)
            keep.append(i)
            boxes.append(b[mask])
            labels.append(new)
            difficult.append(dif[mask])
        return replace(
            self, images=[self.images[i] for i in keep], boxes=boxes, labels=labels, difficult=difficult,
            ids=[self.ids[i] for i in keep], sizes=None if self.sizes is None else [self.sizes[i] for i in keep],
        )

    def drop_difficult(self, keep_empty: bool = True) -> "DetectionSplit":
        """Without the difficult boxes (py-faster-rcnn's default for VOC training); images left without boxes
        are kept unless `keep_empty=False`."""
        keep, boxes, labels, difficult = [], [], [], []
        for i, (b, lab, dif) in enumerate(zip(self.boxes, self.labels, self.difficult)):
            mask = ~dif
            if not bool(mask.any()) and not keep_empty:
                continue
            keep.append(i)
            boxes.append(b[mask])
            labels.append(lab[mask])
            difficult.append(dif[mask])
        return replace(
            self, images=[self.images[i] for i in keep], boxes=boxes, labels=labels, difficult=difficult,
            ids=[self.ids[i] for i in keep], sizes=None if self.sizes is None else [self.sizes[i] for i in keep],
        )


def _is_empty(values) -> bool:
    return len(values) == 0 if not isinstance(values, torch.Tensor) else values.numel() == 0


def _as_label_tensor(values, where: str, i: int) -> torch.Tensor:
    tensor = torch.as_tensor(values if not _is_empty(values) else np.zeros(0, np.int64))
    if tensor.dtype.is_floating_point or tensor.dtype == torch.bool or tensor.dtype.is_complex:
        raise _bad(where, f"labels of image {i} must be integer class ids, got dtype {tensor.dtype}")
    return tensor.to(torch.int64).reshape(-1)


def empty_split(name: str = "") -> DetectionSplit:
    """A split with no images (e.g. validation with `val_fraction=0`)."""
    return DetectionSplit(images=[], boxes=[], labels=[], difficult=[], ids=[], sizes=[], name=name)


@dataclass
class DetectionData:
    """Train / validation / test detection splits plus what the detector and the evaluation need.

    class_names: name of each class id (`n_classes` of them; no background).
    mean/std: per-channel normalisation of [0, 1] images (ImageNet's, as torchvision's Faster R-CNN uses).
    image_size: the detector's resize target for the shorter side (torchvision `min_size`); max_size: the cap
        on the longer side (`max_size`). The loaders do not resize; these are recorded for the detector.
    novel_classes: class ids held out as novel in few-shot runs (VOC `novel_split`, shapes `n_novel_classes`);
        the loaders keep their boxes in every split: select them with `select_classes` (`base_classes`).
    task/open_set/channels: what the dataset YAML declares (detection, closed set, RGB).

    Every split's labels are checked to lie in 0..n_classes-1 when the object is built.
    """

    name: str
    train: DetectionSplit
    val: DetectionSplit
    test: DetectionSplit
    class_names: List[str]
    n_classes: int
    mean: Sequence[float] = IMAGENET_MEAN
    std: Sequence[float] = IMAGENET_STD
    channels: int = 3
    image_size: int = 600
    max_size: int = 1000
    novel_classes: Tuple[int, ...] = ()
    extras: dict = field(default_factory=dict)
    task: str = "detection"
    open_set: bool = False

    def __post_init__(self) -> None:
        self.class_names = [str(c) for c in self.class_names]
        if len(self.class_names) != int(self.n_classes):
            raise _bad(f"dataset '{self.name}'", f"{len(self.class_names)} class names but n_classes={self.n_classes}")
        self.novel_classes = tuple(int(c) for c in self.novel_classes)
        for c in self.novel_classes:
            if not 0 <= c < self.n_classes:
                raise _bad(f"dataset '{self.name}'", f"novel class id {c} is outside 0..{self.n_classes - 1}")
        for split_name in ("train", "val", "test"):
            split = getattr(self, split_name)
            if not split.name:
                split.name = f"dataset '{self.name}' {split_name} split"
            if split.labels:
                labels = torch.cat(split.labels)
                bad = (labels < 0) | (labels >= self.n_classes)
                if bad.any():
                    k = int(torch.nonzero(bad)[0])
                    raise _bad(split.name, f"{int(bad.sum())} box label(s) outside the {self.n_classes} classes "
                                           f"(first {int(labels[k])}); class ids must be 0..{self.n_classes - 1}")

    @property
    def base_classes(self) -> Tuple[int, ...]:
        """Class ids that are not novel (all classes when `novel_classes` is empty)."""
        return tuple(c for c in range(self.n_classes) if c not in set(self.novel_classes))

    def splits(self) -> Dict[str, DetectionSplit]:
        return {"train": self.train, "val": self.val, "test": self.test}

    def class_ids(self, classes: Sequence[Union[int, str]]) -> List[int]:
        """Class ids of `classes` given as ids or names; an unknown one is refused in one line."""
        out = []
        for c in classes:
            if isinstance(c, str) and not c.lstrip("-").isdigit():
                if c not in self.class_names:
                    raise ConfigError(f"dataset '{self.name}' has no class {c!r}; its classes are "
                                      f"{', '.join(self.class_names)}")
                out.append(self.class_names.index(c))
            else:
                c = int(c)
                if not 0 <= c < self.n_classes:
                    raise ConfigError(f"dataset '{self.name}' has no class id {c}; ids are 0..{self.n_classes - 1}")
                out.append(c)
        return out

    def select_classes(self, classes: Sequence[Union[int, str]], relabel: bool = True, keep_empty: bool = False,
                       drop_mixed: bool = False, splits: Sequence[str] = ("train", "val", "test")) -> "DetectionData":
        """The dataset restricted to `classes` (ids or names) in the named `splits` (the others unchanged; only
        with `relabel=False`, which keeps the label space). With `relabel` (default) the kept classes become
        0..K-1 in the given order, and `class_names`, `n_classes` and `novel_classes` follow."""
        ids = self.class_ids(classes)
        if relabel and set(splits) != {"train", "val", "test"}:
            raise ConfigError("select_classes(relabel=True) changes the label space, so it must apply to all of "
                              "train, val and test; pass relabel=False to filter only some splits")
        new = {}
        for split_name, split in self.splits().items():
            if split_name in splits:
                split = split.select_classes(ids, keep_empty=keep_empty, relabel=relabel, drop_mixed=drop_mixed)
            new[split_name] = split
        if not relabel:
            return replace(self, **new)
        names = [self.class_names[c] for c in ids]
        novel = tuple(ids.index(c) for c in self.novel_classes if c in ids)
        return replace(self, **new, class_names=names, n_classes=len(ids), novel_classes=novel)


# ------------------------------------------------------------------------------------------- image helpers
def decode_rgb(path: str, where: str = "") -> torch.Tensor:
    """Decode an image file to a uint8 3 x H x W RGB tensor (torchvision's decoder; PIL for formats it lacks);
    an unreadable file raises `files.ImageDecodeError` naming it."""
    from torchvision.io import ImageReadMode, decode_image, read_file

    from .files import ImageDecodeError, _reason

    try:
        return decode_image(read_file(str(path)), mode=ImageReadMode.RGB)
    except Exception:  # noqa: BLE001 - retry with PIL (formats or modes torchvision lacks), then report
        try:
            from .files import load_image

            array = np.asarray(load_image(str(path)), dtype=np.uint8)
            return torch.from_numpy(array.transpose(2, 0, 1).copy())
        except Exception as err:  # noqa: BLE001
            prefix = f"{where}: " if where else ""
            raise ImageDecodeError(f"{prefix}cannot decode image {path} ({_reason(err)}); replace the file from the "
                                   "original archive") from err


def _header_size(path: str) -> Tuple[int, int]:
    """(width, height) from the image header."""
    from PIL import Image

    with Image.open(path) as image:
        return image.size


def hflip(image: torch.Tensor, boxes: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Mirror an image (... x H x W) and its 0-based x1, y1, x2, y2 boxes left-right: x -> W - x."""
    width = image.shape[-1]
    flipped = boxes.clone()
    flipped[:, 0] = width - boxes[:, 2]
    flipped[:, 2] = width - boxes[:, 0]
    return image.flip(-1), flipped


class DetectionDataset(Dataset):
    """A torch `Dataset` over a `DetectionSplit`: item i is (uint8 3 x H x W image, target dict with "boxes",
    "labels" (+ `label_offset`), "difficult" and "image_id" (the index i)). Batch with `collate_detection`."""

    def __init__(self, split: DetectionSplit, label_offset: int = 1) -> None:
        self.split = split
        self.label_offset = int(label_offset)

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        i = int(index)
        target = self.split.target(i, self.label_offset)
        target["image_id"] = torch.tensor(i, dtype=torch.int64)
        return self.split.load_image(i), target


def collate_detection(batch):
    """(list of images, list of targets): what torchvision's detectors take (images differ in size)."""
    images, targets = zip(*batch) if batch else ((), ())
    return list(images), list(targets)


# ---------------------------------------------------------------------------------------------- PASCAL VOC
@dataclass
class VocAnnotation:
    """One parsed `Annotations/<id>.xml`: 0-based boxes (see the module docstring) and the `<size>`."""

    boxes: np.ndarray  # float32 (n, 4)
    labels: np.ndarray  # int64 (n,)
    difficult: np.ndarray  # bool (n,)
    height: int
    width: int


def _text(node, tag: str) -> Optional[str]:
    child = node.find(tag)
    if child is None or child.text is None:
        return None
    return child.text.strip()


def _positive_int(node, tag: str, path: Path) -> int:
    text = _text(node, tag)
    try:
        number = float(text) if text is not None else math.nan
    except ValueError:
        number = math.nan
    if not (math.isfinite(number) and number > 0 and number.is_integer()):
        raise DatasetInvalidError(f"{path}: <size><{tag}> must be a positive integer, got {text!r}; replace the "
                                  "file with the release's")
    return int(number)


def read_voc_annotation(path: Union[str, Path], class_index: Optional[Dict[str, int]] = None) -> VocAnnotation:
    """Parse one VOC annotation file; every problem is one `DatasetInvalidError` line naming the file.

    Boxes become 0-based `x1 = xmin - 1, y1 = ymin - 1, x2 = xmax, y2 = ymax` and must satisfy
    `1 <= xmin <= xmax <= width` and `1 <= ymin <= ymax <= height` (VOC's inclusive 1-based pixels).
    """
    path = Path(path)
    index = class_index if class_index is not None else {name: i for i, name in enumerate(VOC_CLASSES)}
    try:
        root = _parse_xml(str(path)).getroot()
    except _ParseError as err:
        reason = " ".join(str(err).split())
        raise DatasetInvalidError(f"{path}: not a readable VOC annotation (malformed XML: {reason}); replace it with "
                                  "the release's file") from err
    except OSError as err:
        raise DatasetInvalidError(f"{path}: cannot be read ({type(err).__name__}: {err.strerror or err})") from err
    except Exception as err:  # noqa: BLE001 - defusedxml's refusals (entities, DTDs) are named in one line too
        raise DatasetInvalidError(f"{path}: not a VOC annotation ({type(err).__name__}: "
                                  f"{' '.join(str(err).split())}); replace it with the release's file") from err
    if root.tag != "annotation":
        raise DatasetInvalidError(f"{path}: root element is <{root.tag}>, expected <annotation>; not a VOC "
                                  "annotation file")
    size = root.find("size")
    if size is None:
        raise DatasetInvalidError(f"{path}: no <size> element (width and height of the image); replace the file "
                                  "with the release's")
    width, height = _positive_int(size, "width", path), _positive_int(size, "height", path)
    boxes, labels, difficult = [], [], []
    for k, obj in enumerate(root.findall("object"), 1):
        name = _text(obj, "name")
        if not name:
            raise DatasetInvalidError(f"{path}: object {k} has no <name>; fix the annotation")
        if name not in index:
            known = ", ".join(index)
            raise DatasetInvalidError(f"{path}: object {k} has unknown class {name!r}; the classes are {known}")
        flag = _text(obj, "difficult")
        if flag not in (None, "0", "1"):
            raise DatasetInvalidError(f"{path}: object {k} ({name}) has <difficult>{flag}</difficult>; it must be "
                                      "0 or 1")
        bndbox = obj.find("bndbox")  # the object's own box, not those of its <part>s
        if bndbox is None:
            raise DatasetInvalidError(f"{path}: object {k} ({name}) has no <bndbox>; fix the annotation")
        coords = []
        for tag in ("xmin", "ymin", "xmax", "ymax"):
            text = _text(bndbox, tag)
            try:
                value = float(text) if text is not None else math.nan
            except ValueError:
                value = math.nan
            if not math.isfinite(value):
                raise DatasetInvalidError(f"{path}: object {k} ({name}) has <{tag}>{text}</{tag}>, not a number; "
                                          "fix the annotation")
            coords.append(value)
        xmin, ymin, xmax, ymax = coords
        shown = f"xmin={xmin:g} ymin={ymin:g} xmax={xmax:g} ymax={ymax:g}"
        if xmin > xmax or ymin > ymax:
            raise DatasetInvalidError(f"{path}: object {k} ({name}) has an empty box ({shown}: needs xmin <= xmax "
                                      "and ymin <= ymax); fix the annotation")
        if xmin < 1 or ymin < 1 or xmax > width or ymax > height:
            raise DatasetInvalidError(f"{path}: object {k} ({name}) box ({shown}) lies outside the {width}x{height} "
                                      "image of <size> (VOC pixels run 1..width, 1..height); fix the annotation")
        boxes.append((xmin - 1.0, ymin - 1.0, xmax, ymax))
        labels.append(index[name])
        difficult.append(flag == "1")
    return VocAnnotation(
        boxes=np.asarray(boxes, dtype=np.float32).reshape(-1, 4), labels=np.asarray(labels, dtype=np.int64),
        difficult=np.asarray(difficult, dtype=bool), height=height, width=width,
    )


def voc_image_set(dataset_path: Union[str, Path], year: str, image_set: str) -> Optional[Path]:
    """`ImageSets/Main/<image_set>.txt` of VOC<year> under `dataset_path/VOCdevkit/` or `dataset_path/`, or None."""
    root = Path(dataset_path)
    for folder in (root / "VOCdevkit" / f"VOC{year}", root / f"VOC{year}"):
        path = folder / "ImageSets" / "Main" / f"{image_set}.txt"
        if path.is_file():
            return path
    return None


def read_image_set(path: Path) -> List[str]:
    """The image ids of an ImageSets list (one per line; the first field, so `<class>_<set>.txt` works too)."""
    ids, seen = [], {}
    with open(path) as f:
        for line_no, line in enumerate(f, 1):
            fields = line.split()
            if not fields:
                continue
            image_id = fields[0]
            if image_id in seen:
                raise DatasetInvalidError(f"{path}:{line_no}: image id {image_id!r} is listed twice (first on line "
                                          f"{seen[image_id]}); replace the file with the release's")
            seen[image_id] = line_no
            ids.append(image_id)
    return ids


def _download_voc(dataset_path: Path, year: str, image_set: str) -> None:
    """Fetch and extract the official archive through torchvision (only the download; parsing stays ours)."""
    from torchvision.datasets import VOCDetection

    archive = VOC_ARCHIVES.get((year, image_set), f"the VOC{year} archive")
    log.info("downloading %s through torchvision into %s", archive, dataset_path)
    try:
        VOCDetection(root=str(dataset_path), year=year, image_set=image_set, download=True)
    except Exception as err:  # noqa: BLE001 - network / disk / checksum failures: one line with the fix
        text = " ".join(str(err).split())
        raise DatasetMissingError(
            f"could not download {archive} (VOC{year} {image_set}) into dataset.dataset_path={str(dataset_path)!r} "
            f"({type(err).__name__}: {text}); fetch it yourself, run `python scripts/prepare_voc.py DIR --archive "
            f"{archive}` and set dataset.dataset_path=DIR"
        ) from err


def _voc_name(years: Sequence[str]) -> str:
    if list(years) == ["2007"]:
        return "voc2007"
    if list(years) == ["2007", "2012"]:
        return "voc0712"
    return "voc" + "_".join(years)


def _probe_size(path: str) -> Union[Tuple[int, int], BaseException]:
    try:
        return _header_size(path)
    except Exception as err:  # noqa: BLE001 - reported with the file
        return err


def _check_jpegs(name: str, records: List[Tuple[str, str, VocAnnotation]]) -> None:
    """Every JPEG's header opens and its size equals its annotation's `<size>` (one line naming the files)."""
    from .files import _reason

    paths = [jpeg for jpeg, _, _ in records]
    if len(paths) > _SERIAL_PROBES:
        with ThreadPoolExecutor(_PROBE_THREADS) as pool:
            sizes = list(pool.map(_probe_size, paths, chunksize=256))
    else:
        sizes = [_probe_size(p) for p in paths]
    unreadable = [(p, s) for p, s in zip(paths, sizes) if isinstance(s, BaseException)]
    if unreadable:
        first, err = unreadable[0]
        raise DatasetInvalidError(
            f"dataset '{name}': {len(unreadable)} of {len(paths)} JPEG files cannot be read as images, e.g. {first} "
            f"({_reason(err)}); replace them from the VOC release")
    for (jpeg, xml, ann), size in zip(records, sizes):
        if tuple(size) != (ann.width, ann.height):
            raise DatasetInvalidError(f"{jpeg} is {size[0]}x{size[1]} but {xml} says {ann.width}x{ann.height}; the "
                                      "files do not belong together: replace both with the release's")


def _read_voc_set(dataset_path: Path, name: str, year: str, image_set: str, download: bool,
                  verify_files: bool, class_index: Optional[Dict[str, int]] = None) -> Tuple[DetectionSplit, Path]:
    listing = voc_image_set(dataset_path, year, image_set)
    if listing is None and download:
        _download_voc(dataset_path, year, image_set)
        listing = voc_image_set(dataset_path, year, image_set)
    if listing is None:
        expected = dataset_path / "VOCdevkit" / f"VOC{year}" / "ImageSets" / "Main" / f"{image_set}.txt"
        archive = VOC_ARCHIVES.get((year, image_set))
        what = f"{expected} with JPEGImages/ and Annotations/ beside ImageSets/"
        what += f" (extracted {archive})" if archive else ""
        raise missing_dataset(name, dataset_path, what, PREPARE_VOC)
    voc_dir = listing.parents[2]
    ids = read_image_set(listing)
    missing_xml = [i for i in ids if not (voc_dir / "Annotations" / f"{i}.xml").is_file()]
    missing_jpg = [i for i in ids if not (voc_dir / "JPEGImages" / f"{i}.jpg").is_file()]
    for missing, folder, ext in ((missing_xml, "Annotations", "xml"), (missing_jpg, "JPEGImages", "jpg")):
        if missing:
            examples = ", ".join(str(voc_dir / folder / f"{i}.{ext}") for i in missing[:_EXAMPLES])
            raise DatasetMissingError(
                f"{listing}: {len(missing)} of {len(ids)} listed ids have no {folder}/<id>.{ext} file, e.g. "
                f"{examples}; extract the complete release ({VOC_ARCHIVES.get((year, image_set), 'VOC' + year)}) "
                f"under dataset.dataset_path={str(dataset_path)!r}")
    records = []
    for image_id in ids:
        xml = voc_dir / "Annotations" / f"{image_id}.xml"
        records.append((str(voc_dir / "JPEGImages" / f"{image_id}.jpg"), str(xml), read_voc_annotation(xml, class_index)))
    if verify_files:
        _check_jpegs(name, records)
    split = DetectionSplit(
        images=[jpeg for jpeg, _, _ in records],
        boxes=[torch.from_numpy(ann.boxes) for _, _, ann in records],
        labels=[torch.from_numpy(ann.labels) for _, _, ann in records],
        difficult=[torch.from_numpy(ann.difficult) for _, _, ann in records],
        ids=ids,
        sizes=[(ann.height, ann.width) for _, _, ann in records],
        name=f"{listing}",
    )
    return split, voc_dir


def _concat(splits: Sequence[DetectionSplit]) -> DetectionSplit:
    return DetectionSplit(
        images=[x for s in splits for x in s.images], boxes=[x for s in splits for x in s.boxes],
        labels=[x for s in splits for x in s.labels], difficult=[x for s in splits for x in s.difficult],
        ids=[x for s in splits for x in s.ids], sizes=[x for s in splits for x in s.sizes],
    )


def holdout_split(n: int, val_fraction: float, seed: int) -> Tuple[np.ndarray, np.ndarray]:
    """Sorted indices (keep, holdout) of a class-agnostic seeded split: round(val_fraction * n) images held out."""
    if not 0 <= float(val_fraction) < 1:
        raise ConfigError(f"dataset.loader.val_fraction={val_fraction} must lie in [0, 1)")
    order = np.random.RandomState(int(seed)).permutation(n)
    n_val = int(round(float(val_fraction) * n))
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def _check_years(years: Sequence) -> List[str]:
    out = [str(y) for y in years]
    unknown = [y for y in out if y not in VOC_YEARS]
    if not out or unknown:
        raise ConfigError(f"dataset.loader.years={out} must name VOC years among {', '.join(VOC_YEARS)}")
    if len(set(out)) != len(out):
        raise ConfigError(f"dataset.loader.years={out} repeats a year")
    return out


def load_voc(dataset_path: str, years: Sequence[str] = ("2007",), train_sets: Sequence[str] = ("trainval",),
             test_set: str = "test", test_year: str = "2007", val_fraction: float = 0.1, seed: int = 1234,
             download: bool = False, verify_files: bool = True, image_size: int = 600, max_size: int = 1000,
             novel_split: Optional[int] = None, classes: Optional[Sequence[str]] = None,
             novel: Optional[Sequence[str]] = None) -> DetectionData:
    """PASCAL VOC detection from `<dataset_path>/VOCdevkit/VOC<year>/`.

    train = the `train_sets` image sets of every year in `years` (in that order) minus validation;
    val = a class-agnostic, seeded (`seed`) `val_fraction` of those images (0: an empty split);
    test = `test_set` of `test_year` (VOC2007 test: the only VOC test set with public annotations).
    years=("2007",) is voc2007, ("2007", "2012") voc0712. download: fetch missing image sets through
    torchvision's `VOCDetection(download=True)` (online only). verify_files: open every JPEG header and check
    its size against the annotation (~1 s per 10k files warm; false: only check that the files exist).
    image_size/max_size: recorded for the detector's resize (`DetectionData`). novel_split: 1, 2 or 3 sets
    `novel_classes` to that few-shot split's five novel classes (`VOC_NOVEL_SPLITS`); no box is dropped.
    classes / novel: another class list in the same layout (e.g. ImageNet-LOC boxes written as a VOCdevkit) and the
    names among them held out as novel (instead of VOC's 20 classes and `novel_split`).
    """
    start = time.perf_counter()
    years = _check_years(years)
    test_year = _check_years([test_year])[0]
    name = _voc_name(years)
    if isinstance(train_sets, str):
        train_sets = [train_sets]
    root = Path(dataset_path)
    names = list(classes) if classes else list(VOC_CLASSES)
    if len(set(names)) != len(names):
        raise ConfigError("dataset.loader.classes lists a class twice")
    class_index = {c: i for i, c in enumerate(names)}
    if novel and novel_split is not None:
        raise ConfigError("dataset.loader.novel and novel_split both set; keep one")
    unknown = [c for c in (novel or ()) if c not in class_index]
    if unknown:
        raise ConfigError(f"dataset.loader.novel names {unknown[0]!r}, which is not among the classes")
    if novel_split is not None and int(novel_split) not in VOC_NOVEL_SPLITS:
        raise ConfigError(f"dataset.loader.novel_split={novel_split} must be null or one of "
                          f"{', '.join(map(str, VOC_NOVEL_SPLITS))}")
    parts, folders = [], {}
    for year in years:
        for image_set in train_sets:
            split, voc_dir = _read_voc_set(root, name, year, str(image_set), download, verify_files, class_index)
            parts.append(split)
            folders[year] = str(voc_dir)
    test, test_dir = _read_voc_set(root, name, test_year, str(test_set), download, verify_files, class_index)
    trainval = _concat(parts)
    keep, held = holdout_split(len(trainval), val_fraction, seed)
    novel_names = list(novel or ()) if novel_split is None else VOC_NOVEL_SPLITS[int(novel_split)]
    novel_ids = tuple(class_index[c] for c in novel_names)
    test.name = ""
    data = DetectionData(
        name=name, train=trainval.subset(keep), val=trainval.subset(held), test=test,
        class_names=names, n_classes=len(names), image_size=int(image_size),
        max_size=int(max_size), novel_classes=novel_ids,
        extras={
            "root": str(root), "folders": {**folders, f"{test_year} {test_set}": str(test_dir)},
            "protocol": f"VOC{'+'.join(years)} {'+'.join(map(str, train_sets))} (val = seeded class-agnostic "
                        f"{float(val_fraction):g}), VOC{test_year} {test_set}",
            "boxes": "0-based x1=xmin-1, y1=ymin-1, x2=xmax, y2=ymax",
            "novel_split": novel_split,
        },
    )
    log.info("dataset '%s': %d train / %d val / %d test images read in %.1fs", name, len(data.train),
             len(data.val), len(data.test), time.perf_counter() - start)
    return data


# ------------------------------------------------------------------------------------------ synthetic shapes
SHAPES: Tuple[str, ...] = ("square", "circle", "triangle", "cross", "diamond", "ring", "frame", "xcross")
#: (name, RGB) of the class colours; each has a channel >= 200, far above the background
SHAPE_COLOURS: Tuple[Tuple[str, Tuple[int, int, int]], ...] = (
    ("red", (230, 40, 40)), ("green", (40, 210, 60)), ("blue", (50, 90, 240)), ("yellow", (235, 225, 40)),
    ("magenta", (220, 40, 220)), ("cyan", (40, 215, 215)), ("orange", (245, 140, 20)), ("white", (240, 240, 240)),
    ("pink", (250, 150, 190)), ("purple", (150, 70, 245)),
)
#: every background pixel is at most this (each channel); every shape pixel has a channel >= 200
SHAPES_BACKGROUND_MAX = 100
#: (shape, colour) pairs are distinct for class ids below lcm(8, 10)
MAX_SHAPE_CLASSES = 40


def _shape_class(k: int) -> Tuple[str, int]:
    return SHAPES[k % len(SHAPES)], k % len(SHAPE_COLOURS)


def shape_class_names(n_classes: int) -> List[str]:
    """'<colour>_<shape>' of class ids 0..n_classes-1 (class k: shape k mod 8, colour k mod 10)."""
    names = []
    for k in range(n_classes):
        shape, colour = _shape_class(k)
        names.append(f"{SHAPE_COLOURS[colour][0]}_{shape}")
    return names


def shape_mask(shape: str, size: int) -> np.ndarray:
    """Boolean size x size mask of `shape`, touching all four sides of the square."""
    s = int(size)
    y, x = np.mgrid[0:s, 0:s].astype(np.float64)
    c = (s - 1) / 2.0
    t = max(2.0, s / 4.0)  # stroke width
    if shape == "square":
        mask = np.ones((s, s), dtype=bool)
    elif shape == "circle":
        mask = (x - c) ** 2 + (y - c) ** 2 <= (s / 2.0) ** 2
    elif shape == "ring":
        d2 = (x - c) ** 2 + (y - c) ** 2
        mask = (d2 <= (s / 2.0) ** 2) & (d2 >= (s / 2.0 - t) ** 2)
    elif shape == "triangle":
        mask = np.abs(x - c) <= (y + 1) / 2.0
    elif shape == "cross":
        mask = (np.abs(x - c) <= t / 2.0) | (np.abs(y - c) <= t / 2.0)
    elif shape == "diamond":
        mask = np.abs(x - c) + np.abs(y - c) <= s / 2.0
    elif shape == "frame":
        mask = (np.minimum(x, s - 1 - x) < t) | (np.minimum(y, s - 1 - y) < t)
    elif shape == "xcross":
        mask = (np.abs(x - y) <= t / 2.0) | (np.abs(x + y - (s - 1)) <= t / 2.0)
    else:
        raise ValueError(f"unknown shape {shape!r}; choose from {', '.join(SHAPES)}")
    return mask


def _overlaps(box: Tuple[int, int, int, int], boxes: List[Tuple[int, int, int, int]], gap: int = 2) -> bool:
    x1, y1, x2, y2 = box
    return any(x1 < b[2] + gap and b[0] < x2 + gap and y1 < b[3] + gap and b[1] < y2 + gap for b in boxes)


def _shapes_split(rng: np.random.Generator, n_images: int, image_size: int, n_classes: int,
                  prefix: str) -> DetectionSplit:
    low = max(16, int(round(0.75 * image_size)))
    images, boxes, labels, ids = [], [], [], []
    for i in range(n_images):
        h, w = (int(v) for v in rng.integers(low, image_size + 1, size=2))
        base = rng.integers(0, 61, size=3)
        noise = rng.integers(-20, 21, size=(h, w, 3))
        canvas = np.clip(base[None, None, :] + noise + 20, 0, SHAPES_BACKGROUND_MAX).astype(np.uint8)
        placed: List[Tuple[int, int, int, int]] = []
        classes: List[int] = []
        n_shapes = int(rng.integers(1, 4))
        small = min(h, w)
        s_low, s_high = max(8, int(0.15 * small)), max(9, int(0.45 * small))
        for _ in range(n_shapes):
            k = int(rng.integers(n_classes))
            shape, colour = _shape_class(k)
            for _try in range(30):
                s = int(rng.integers(s_low, s_high + 1))
                x0, y0 = int(rng.integers(0, w - s + 1)), int(rng.integers(0, h - s + 1))
                mask = shape_mask(shape, s)
                rows, cols = np.nonzero(mask)
                box = (x0 + int(cols.min()), y0 + int(rows.min()), x0 + int(cols.max()) + 1, y0 + int(rows.max()) + 1)
                if not _overlaps(box, placed):
                    canvas[y0:y0 + s, x0:x0 + s][mask] = SHAPE_COLOURS[colour][1]
                    placed.append(box)
                    classes.append(k)
                    break
        images.append(torch.from_numpy(canvas.transpose(2, 0, 1).copy()))
        boxes.append(torch.tensor(placed, dtype=torch.float32).reshape(-1, 4))
        labels.append(torch.tensor(classes, dtype=torch.int64))
        ids.append(f"{prefix}_{i:05d}")
    return DetectionSplit(images=images, boxes=boxes, labels=labels,
                          difficult=[torch.zeros(len(b), dtype=torch.bool) for b in boxes], ids=ids)


def load_shapes_detection(dataset_path: str = "", seed: int = 1234, n_train: int = 400, n_val: int = 100,
                          n_test: int = 200, image_size: int = 128, n_classes: int = 6,
                          max_size: Optional[int] = None, n_novel_classes: int = 0) -> DetectionData:
    """Synthetic detection set held in memory (see the module docstring); `dataset_path` is unused.

    image_size: the largest canvas side (each canvas is 0.75 * image_size .. image_size a side) and the
    detector's min_size; max_size: its cap on the longer side (default ceil(4/3 * image_size), so no canvas is
    shrunk). n_classes: 1..40 (shape, colour) classes. n_novel_classes: the last ones become
    `novel_classes` for few-shot runs (no box is dropped).
    """
    if not 1 <= int(n_classes) <= MAX_SHAPE_CLASSES:
        raise ConfigError(f"dataset.loader.n_classes={n_classes} must lie in 1..{MAX_SHAPE_CLASSES} "
                          f"({len(SHAPES)} shapes x {len(SHAPE_COLOURS)} colours)")
    if int(image_size) < 24:
        raise ConfigError(f"dataset.image_size={image_size} must be >= 24 for the shapes canvases")
    if not 0 <= int(n_novel_classes) < int(n_classes):
        raise ConfigError(f"dataset.loader.n_novel_classes={n_novel_classes} must lie in 0..{int(n_classes) - 1}")
    for key, value in (("n_train", n_train), ("n_val", n_val), ("n_test", n_test)):
        if int(value) < 0:
            raise ConfigError(f"dataset.loader.{key}={value} must be >= 0")
    splits = {}
    for k, (split, n) in enumerate((("train", n_train), ("val", n_val), ("test", n_test))):
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), k]))
        splits[split] = _shapes_split(rng, int(n), int(image_size), int(n_classes), f"shapes_{split}")
    n_classes = int(n_classes)
    return DetectionData(
        name="shapes_det", **splits, class_names=shape_class_names(n_classes), n_classes=n_classes,
        image_size=int(image_size), max_size=int(max_size) if max_size else int(math.ceil(image_size * 4 / 3)),
        novel_classes=tuple(range(n_classes - int(n_novel_classes), n_classes)),
        extras={"protocol": f"synthetic shapes, seed {int(seed)}"},
    )
