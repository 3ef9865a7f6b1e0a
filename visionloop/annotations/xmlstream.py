"""Safe, streaming XML for annotation files (Pascal VOC, CVAT): defusedxml's SAX parser, so
entity declarations (billion laughs) and external entities (XXE) are refused before anything
is expanded or fetched, fed in chunks so a CVAT video dump of any size is read element by
element, with the line and column of every element kept for error messages and pointers.

``iter_elements(uri, tags)`` yields each complete element whose tag is in ``tags`` (with its
subtree) as soon as it closes, then forgets it: memory follows one image or track, not the
file. Everything else is only walked.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from visionloop import storage

CHUNK = 1 << 16


class XmlError(ValueError):
    """A file that is not well-formed XML, or that declares entities (refused)."""

    def __init__(self, code: str, line: int | None, column: int | None, message: str) -> None:
        super().__init__(message)
        self.code = code  # malformed_xml | xml_entities_refused
        self.line = line
        self.column = column
        self.message = message

    @property
    def pointer(self) -> str:
        return "" if self.line is None else f"line {self.line}, column {self.column}"


@dataclass
class Node:
    """An element with its attributes, text, children and position in the file."""

    tag: str
    attrib: dict[str, str]
    line: int
    column: int  # 1-based
    children: list[Node] = field(default_factory=list)
    text: str = ""

    @property
    def pointer(self) -> str:
        return f"line {self.line}, column {self.column}"

    def get(self, key: str, default: Any = None) -> Any:
        return self.attrib.get(key, default)

    def find(self, tag: str) -> Node | None:
        return next((c for c in self.children if c.tag == tag), None)

    def findall(self, tag: str) -> list[Node]:
        return [c for c in self.children if c.tag == tag]

    def findtext(self, path: str, default: str | None = None) -> str | None:
        node: Node | None = self
        for part in path.split("/"):
            node = node.find(part) if node is not None else None
        return default if node is None else node.text.strip()


def _handler_class() -> Any:
    from xml.sax.handler import ContentHandler

    class _Builder(ContentHandler):
        def __init__(self, tags: frozenset[str]) -> None:
            super().__init__()
            self.tags = tags
            self.stack: list[Node | None] = []  # None: outside any kept subtree
            self.done: list[Node] = []
            self.locator: Any = None
            self.root: str | None = None

        def setDocumentLocator(self, locator: Any) -> None:
            self.locator = locator

        def startElement(self, name: str, attrs: Any) -> None:
            if self.root is None:
                self.root = name
            parent = self.stack[-1] if self.stack else None
            if parent is not None or name in self.tags:
                line = self.locator.getLineNumber() if self.locator else 0
                col = (self.locator.getColumnNumber() if self.locator else 0) + 1
                node = Node(name, dict(attrs.items()), line, col)
                if parent is not None:
                    parent.children.append(node)
                self.stack.append(node)
            else:
                self.stack.append(None)

        def endElement(self, name: str) -> None:
            node = self.stack.pop()
            if node is not None and (not self.stack or self.stack[-1] is None):
                self.done.append(node)

        def characters(self, content: str) -> None:
            if self.stack and self.stack[-1] is not None:
                self.stack[-1].text += content

    return _Builder


def iter_elements(uri: str, tags: set[str] | frozenset[str]) -> Iterator[Node]:
    """Yield every element named in ``tags`` (outermost only) with its subtree, in document
    order. Raises ``XmlError`` (with line and column) on malformed XML or any entity
    declaration."""
    from xml.sax import SAXParseException

    import defusedxml.sax
    from defusedxml import DefusedXmlException

    handler = _handler_class()(frozenset(tags))
    parser = defusedxml.sax.make_parser()  # forbid_entities and forbid_external: on
    parser.setContentHandler(handler)
    # ExpatParser.parse() installs a locator, feed() does not: install it ourselves.
    from xml.sax.expatreader import ExpatLocator

    handler.setDocumentLocator(ExpatLocator(parser))
    fs, path = storage.filesystem(uri)

    def where() -> tuple[int | None, int | None]:
        loc = handler.locator
        return (loc.getLineNumber(), loc.getColumnNumber() + 1) if loc else (None, None)

    try:
        with fs.open(path, "rb") as fh:
            while chunk := fh.read(CHUNK):
                parser.feed(chunk)
                if handler.done:
                    yield from handler.done
                    handler.done.clear()
            parser.close()
    except DefusedXmlException as e:
        line, col = where()
        raise XmlError(
            "xml_entities_refused",
            line,
            col,
            f"XML entity declarations are refused (entity expansion and external entities "
            f"are disabled): {e}",
        ) from e
    except SAXParseException as e:
        raise XmlError(
            "malformed_xml",
            e.getLineNumber(),
            e.getColumnNumber() + 1,
            f"malformed XML: {e.getMessage()}",
        ) from e
    yield from handler.done
    handler.done.clear()


def root_tag(uri: str, head_bytes: int = 4096) -> str | None:
    """The root element's name from the start of a file (cheap sniffing; never expands)."""
    import re

    fs, path = storage.filesystem(uri)
    with fs.open(path, "rb") as fh:
        head = fh.read(head_bytes)
    text = head.decode("utf-8", errors="replace")
    for m in re.finditer(r"<([A-Za-z_][\w.\-:]*)[\s>/]", text):
        return m.group(1)
    return None
