"""Label configs generated from a label schema, and the classes read back from one.

Class names are XML attribute values: escaped with :func:`xml.sax.saxutils.quoteattr` (``&``, ``<``, ``>``, quotes),
non-ASCII kept as is (Label Studio stores the config as UTF-8 text). Boxes cannot be rotated (``canRotate="false"``)
so a region is always an axis-aligned FiftyOne box.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from xml.sax.saxutils import quoteattr

from curate_loop.errors import InvalidInputError

IMAGE_NAME, CONTROL_NAME, IMAGE_KEY = "image", "label", "image"
KINDS = ("detections", "classification")


def label_config(kind: str, classes: list[str]) -> str:
    """The XML config of a project labeling ``kind`` ("detections" or "classification") with ``classes``."""
    if kind not in KINDS:
        raise InvalidInputError(f"Unknown label kind {kind!r}; choose one of {KINDS}.")
    if not classes:
        raise InvalidInputError("A Label Studio project needs at least one class; the label field has none and no "
                                "classes were given.")
    image = f'<Image name="{IMAGE_NAME}" value="${IMAGE_KEY}" zoom="true"/>'
    if kind == "detections":
        options = "".join(f"<Label value={quoteattr(c)}/>" for c in classes)
        control = (f'<RectangleLabels name="{CONTROL_NAME}" toName="{IMAGE_NAME}" canRotate="false">{options}'
                   "</RectangleLabels>")
    else:
        options = "".join(f"<Choice value={quoteattr(c)}/>" for c in classes)
        control = f'<Choices name="{CONTROL_NAME}" toName="{IMAGE_NAME}" choice="single">{options}</Choices>'
    return f"<View>{image}{control}</View>"


def config_classes(config: str) -> list[str]:
    """The class names a config offers, in order (unescaped)."""
    root = ET.fromstring(config)
    return [el.attrib["value"] for el in root.iter() if el.tag in ("Label", "Choice") and "value" in el.attrib]


def merged_classes(existing: list[str], wanted: list[str]) -> list[str]:
    """``existing`` followed by the ``wanted`` classes it lacks: a config only ever grows."""
    seen = set(existing)
    return list(existing) + [c for c in wanted if c not in seen and not seen.add(c)]
