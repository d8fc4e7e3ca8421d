"""Issue #22 item 15's neighbours: no page names a paper by its seed file; each names its authors and year."""

from __future__ import annotations

import re

import pytest

from tests.pages.conftest import open_page

SEED_FILE = re.compile(r"\bseeds? ?\d{3}|\(seeds? ", re.IGNORECASE)


def page_text(at) -> str:
    parts = [e.value for kind in ("markdown", "caption", "subheader", "info", "title") for e in getattr(at, kind)]
    parts += [str(o) for box in at.selectbox for o in box.options]  # AppTest gives them formatted
    return "\n".join(str(p) for p in parts)


@pytest.mark.parametrize("page", ["pages/home.py", "pages/launch.py", "pages/compare.py", "pages/breakpoints.py"])
def test_pages_name_papers_not_seed_files(db, page):
    at = open_page(page)
    text = page_text(at)
    assert not at.exception and not SEED_FILE.search(text), SEED_FILE.search(text)
    if page in ("pages/home.py", "pages/launch.py"):  # the kd-prune study, by its paper
        assert "Malihi and Heidemann (2023)" in text
