"""The synthetic shapes detection set written in PASCAL VOC's on-disk layout (JPEGs, the release's XML schema,
ImageSets/Main lists), so detection runs go through the real VOC reader. Shape class k is written under the VOC
class name `names[k]`."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from PIL import Image

from tests.datasets.voc_fakes import FakeImage, FakeObject, annotation_xml
from vmf_embeddings.datasets.detection import load_shapes_detection


def write_shapes_voc(root: Path, names: Sequence[str], n_train: int = 120, n_test: int = 60, image_size: int = 64,
                     seed: int = 3) -> Path:
    data = load_shapes_detection(seed=seed, n_train=n_train, n_val=1, n_test=n_test, image_size=image_size,
                                 n_classes=len(names))
    voc = Path(root) / "VOCdevkit" / "VOC2007"
    for folder in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (voc / folder).mkdir(parents=True, exist_ok=True)
    for image_set, split in (("trainval", data.train), ("test", data.test)):
        ids = []
        for i in range(len(split)):
            image = split.load_image(i)
            image_id = f"{image_set}_{i:05d}"
            Image.fromarray(image.permute(1, 2, 0).numpy()).save(voc / "JPEGImages" / f"{image_id}.jpg", quality=100,
                                                                 subsampling=0)
            objects = [FakeObject(names[int(c)], (float(b[0]) + 1, float(b[1]) + 1, float(b[2]), float(b[3])))
                       for b, c in zip(split.boxes[i].tolist(), split.labels[i].tolist())]
            fake = FakeImage(image_id, width=int(image.shape[2]), height=int(image.shape[1]), objects=objects)
            (voc / "Annotations" / f"{image_id}.xml").write_text(annotation_xml(fake, "2007"))
            ids.append(image_id)
        (voc / "ImageSets" / "Main" / f"{image_set}.txt").write_text("".join(f"{i}\n" for i in ids))
    return Path(root)
