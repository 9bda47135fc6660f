"""ovdet's mark in an XML file (Pascal VOC annotations, a Label Studio config): a comment after the
declaration, which every XML reader skips. `ovdet.file_mark` has no XML entry, so it lives here."""

from __future__ import annotations

from pathlib import Path
from xml.etree import ElementTree

XML_DECLARATION = '<?xml version="1.0" encoding="utf-8"?>'
XML_MARK = "<!-- written by ovdet -->"


def marked_xml(root: ElementTree.Element) -> str:
    """The document text: declaration, the mark, then `root` indented."""
    ElementTree.indent(root)
    return f"{XML_DECLARATION}\n{XML_MARK}\n{ElementTree.tostring(root, encoding='unicode')}\n"


def xml_is_ours(path: str | Path) -> bool:
    """True when `path` is a file whose first lines are ovdet's declaration and mark (never raises)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return [f.readline().rstrip("\r\n"), f.readline().rstrip("\r\n")] == [XML_DECLARATION, XML_MARK]
    except OSError:
        return False
