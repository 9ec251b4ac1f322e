"""/docs and /redoc work offline: every asset comes from Tuneforge itself."""

from __future__ import annotations

import re

import httpx
import pytest

from tuneforge.app.apidocs import ASSETS_DIR

URL_ATTR = re.compile(r"""(?:src|href|url)\s*[=:]\s*["']([^"']+)["']""", re.I)


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_reference_nothing_off_origin(client: httpx.Client, page: str) -> None:
    r = client.get(page, headers={"Authorization": ""})  # public, like the OpenAPI document
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    html = r.text
    assert not re.search(r"(https?:)?//[A-Za-z0-9.-]+\.[A-Za-z]{2,}", html), "an absolute URL in the page"
    assert "fonts.googleapis" not in html and "cdn." not in html
    refs = URL_ATTR.findall(html)
    assert refs, html
    for ref in refs:
        assert ref.startswith("/") and not ref.startswith("//"), ref
        asset = client.get(ref, headers={"Authorization": ""})
        assert asset.status_code == 200 and asset.content, ref
    if page == "/docs":
        assert '"validatorUrl": null' in html  # no badge fetched from validator.swagger.io


def test_vendored_assets_carry_their_licences_and_versions() -> None:
    names = {p.name for p in ASSETS_DIR.iterdir()}
    assert {"swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js"} <= names
    assert {"LICENSE.swagger-ui", "LICENSE.redoc", "VERSIONS"} <= names
    versions = (ASSETS_DIR / "VERSIONS").read_text()
    assert "swagger-ui-dist" in versions and "redoc" in versions
