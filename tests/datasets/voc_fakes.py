"""Writer of a tiny PASCAL VOC dataset in the official VOCdevkit layout, so `detection.load_voc` and
`scripts/prepare_voc.py` run their real parsing offline:

    <root>/VOCdevkit/VOC<year>/JPEGImages/<id>.jpg
    <root>/VOCdevkit/VOC<year>/Annotations/<id>.xml        (the release's XML schema: folder, filename, source,
                                                            size, segmented, object/name, pose, truncated,
                                                            difficult, bndbox, and person <part>s in 2012)
    <root>/VOCdevkit/VOC<year>/ImageSets/Main/<set>.txt    (one id per line)

Boxes are given as the release writes them: inclusive 1-based pixel indices. Each JPEG is a dark canvas on
which every object's pixels (columns xmin..xmax, rows ymin..ymax, 1-based) are filled with a bright shape
colour, saved at quality 100 without chroma subsampling, so a test can see where a box lies in the pixels.
"""

from __future__ import annotations

import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np
from PIL import Image

BACKGROUND = (10, 10, 10)
COLOURS = ((255, 255, 255), (255, 60, 60), (60, 255, 60), (60, 60, 255))


@dataclass
class FakeObject:
    name: str
    box: Tuple[float, float, float, float]  # xmin, ymin, xmax, ymax: inclusive, 1-based (as in the release)
    difficult: bool = False
    parts: Sequence[Tuple[str, Tuple[int, int, int, int]]] = ()  # VOC2012 person layout: (part name, box)


@dataclass
class FakeImage:
    id: str
    width: int
    height: int
    objects: List[FakeObject] = field(default_factory=list)


def trainval_2007() -> List[FakeImage]:
    """Ten images: every corner case of the coordinates (a box from pixel 1, a box to the last pixel), several
    objects per image, difficult flags, and classes spread over the 20."""
    ids = (5, 7, 9, 12, 16, 17, 19, 20, 21, 23)
    out = []
    for k, number in enumerate(ids):
        width, height = 60 + 4 * k, 40 + 2 * k
        objects = [FakeObject(("dog", "cat", "person", "car", "bird")[k % 5], (1 + k, 1 + (k % 2), 20 + k, 18),
                              difficult=k % 3 == 0)]
        if k % 2 == 0:  # a second object reaching the right and bottom edges
            objects.append(FakeObject(("sofa", "cow", "horse")[k % 3], (26 + k, 22, width, height)))
        out.append(FakeImage(f"{number:06d}", width, height, objects))
    return out


def testset_2007() -> List[FakeImage]:
    return [
        FakeImage("000001", 50, 40, [FakeObject("dog", (5, 6, 30, 35)), FakeObject("person", (33, 2, 48, 20), True)]),
        FakeImage("000002", 44, 36, [FakeObject("train", (1, 1, 44, 36))]),
        FakeImage("000003", 52, 38, [FakeObject("bird", (10, 12, 25, 30))]),
        FakeImage("000004", 48, 48, [FakeObject("tvmonitor", (2, 3, 20, 22)), FakeObject("bottle", (30, 30, 40, 47))]),
    ]


def trainval_2012() -> List[FakeImage]:
    person = FakeObject("person", (3, 4, 30, 33), parts=(("head", (10, 4, 20, 12)), ("hand", (3, 15, 8, 20))))
    return [
        FakeImage("2008_000002", 56, 42, [FakeObject("tvmonitor", (34, 11, 50, 30))]),
        FakeImage("2008_000003", 60, 45, [person, FakeObject("train", (35, 5, 58, 40))]),
        FakeImage("2009_000001", 40, 40, [FakeObject("boat", (4, 4, 36, 20), difficult=True)]),
        FakeImage("2010_000001", 64, 48, [FakeObject("sheep", (1, 20, 30, 48)), FakeObject("sofa", (40, 2, 62, 18))]),
    ]


def _fmt(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def annotation_xml(image: FakeImage, year: str) -> str:
    """The annotation of `image` in the release's XML schema."""
    lines = [
        "<annotation>",
        f"\t<folder>VOC{year}</folder>",
        f"\t<filename>{image.id}.jpg</filename>",
        "\t<source>",
        f"\t\t<database>The VOC{year} Database</database>",
        f"\t\t<annotation>PASCAL VOC{year}</annotation>",
        "\t\t<image>flickr</image>",
        "\t</source>",
        "\t<size>",
        f"\t\t<width>{image.width}</width>",
        f"\t\t<height>{image.height}</height>",
        "\t\t<depth>3</depth>",
        "\t</size>",
        "\t<segmented>0</segmented>",
    ]
    for obj in image.objects:
        xmin, ymin, xmax, ymax = (_fmt(v) for v in obj.box)
        lines += [
            "\t<object>",
            f"\t\t<name>{obj.name}</name>",
            "\t\t<pose>Unspecified</pose>",
            "\t\t<truncated>0</truncated>",
            f"\t\t<difficult>{int(obj.difficult)}</difficult>",
            "\t\t<bndbox>",
            f"\t\t\t<xmin>{xmin}</xmin>",
            f"\t\t\t<ymin>{ymin}</ymin>",
            f"\t\t\t<xmax>{xmax}</xmax>",
            f"\t\t\t<ymax>{ymax}</ymax>",
            "\t\t</bndbox>",
        ]
        for part, (pxmin, pymin, pxmax, pymax) in obj.parts:
            lines += [
                "\t\t<part>",
                f"\t\t\t<name>{part}</name>",
                "\t\t\t<bndbox>",
                f"\t\t\t\t<xmin>{pxmin}</xmin>",
                f"\t\t\t\t<ymin>{pymin}</ymin>",
                f"\t\t\t\t<xmax>{pxmax}</xmax>",
                f"\t\t\t\t<ymax>{pymax}</ymax>",
                "\t\t\t</bndbox>",
                "\t\t</part>",
            ]
        lines.append("\t</object>")
    lines.append("</annotation>")
    return "\n".join(lines) + "\n"


def image_pixels(image: FakeImage) -> np.ndarray:
    """H x W x 3 uint8: the background with every object's inclusive 1-based pixel range filled (later objects
    on top)."""
    pixels = np.empty((image.height, image.width, 3), dtype=np.uint8)
    pixels[:] = BACKGROUND
    for k, obj in enumerate(image.objects):
        xmin, ymin, xmax, ymax = (int(v) for v in obj.box)
        pixels[max(ymin - 1, 0):ymax, max(xmin - 1, 0):xmax] = COLOURS[k % len(COLOURS)]
    return pixels


def write_jpeg(path: Path, image: FakeImage) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image_pixels(image)).save(path, quality=100, subsampling=0)
    return path


def write_voc(root: Path, year: str, sets: Dict[str, List[FakeImage]]) -> Path:
    """Write `sets` ({image set name: images}) of VOC<year> under `root/VOCdevkit/`; returns the VOC<year>
    folder. An image listed in several sets is written once."""
    voc = Path(root) / "VOCdevkit" / f"VOC{year}"
    (voc / "ImageSets" / "Main").mkdir(parents=True, exist_ok=True)
    (voc / "Annotations").mkdir(parents=True, exist_ok=True)
    for image_set, images in sets.items():
        for image in images:
            write_jpeg(voc / "JPEGImages" / f"{image.id}.jpg", image)
            (voc / "Annotations" / f"{image.id}.xml").write_text(annotation_xml(image, year))
        (voc / "ImageSets" / "Main" / f"{image_set}.txt").write_text("".join(f"{i.id}\n" for i in images))
    return voc


def write_voc0712(root: Path) -> Dict[str, List[FakeImage]]:
    """VOC2007 trainval + test and VOC2012 trainval under `root`; returns {"2007 trainval": images, ...}."""
    sets = {"2007 trainval": trainval_2007(), "2007 test": testset_2007(), "2012 trainval": trainval_2012()}
    write_voc(root, "2007", {"trainval": sets["2007 trainval"], "test": sets["2007 test"]})
    write_voc(root, "2012", {"trainval": sets["2012 trainval"]})
    return sets


def write_tar(path: Path, staging: Path) -> Path:
    """An uncompressed tar of `staging/VOCdevkit` with members named `VOCdevkit/...`, as the release tars are."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tf:
        tf.add(staging / "VOCdevkit", arcname="VOCdevkit")
    return path


def write_release_tars(folder: Path) -> Dict[str, Path]:
    """The three official archive names holding the fake data: VOCtrainval_06-Nov-2007.tar (2007 trainval),
    VOCtest_06-Nov-2007.tar (2007 test), VOCtrainval_11-May-2012.tar (2012 trainval)."""
    folder = Path(folder)
    write_voc(folder / "staging_07", "2007", {"trainval": trainval_2007()})
    write_voc(folder / "staging_07test", "2007", {"test": testset_2007()})
    write_voc(folder / "staging_12", "2012", {"trainval": trainval_2012()})
    return {
        "2007 trainval": write_tar(folder / "VOCtrainval_06-Nov-2007.tar", folder / "staging_07"),
        "2007 test": write_tar(folder / "VOCtest_06-Nov-2007.tar", folder / "staging_07test"),
        "2012 trainval": write_tar(folder / "VOCtrainval_11-May-2012.tar", folder / "staging_12"),
    }
