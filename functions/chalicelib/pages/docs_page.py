"""The docs page at `/api-docs`: Swagger UI rendering the OpenAPI document (openapi.py),
its files kept in web/swagger-ui and served by the API itself (`?asset=`), never from a CDN;
a plain table of the routes where those files are missing.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

from chalicelib.pages import WEB

# Swagger UI's dist files, as the swagger-ui-dist npm package of this version has them
# (web/swagger-ui/README.md: where they come from, how to update them).
SWAGGER_UI = WEB / "swagger-ui"
SWAGGER_UI_VERSION = "5.35.0"
# The files the docs page loads, with their media types: Swagger UI's, and our stylesheet
# on top of its own (contrast, web/api-docs.css).
DOCS_ASSETS = {
    "swagger-ui-bundle.js": "application/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "api-docs.css": "text/css; charset=utf-8",
}
_OUR_ASSETS = {"api-docs.css"}


def _swagger_dir() -> Path | None:
    return SWAGGER_UI if (SWAGGER_UI / "swagger-ui-bundle.js").is_file() else None


# Swagger UI as it comes fails axe-core (tests/e2e/test_page_accessibility.py). A plugin of
# ours changes its markup where it is wrong: its title block is outside any landmark (made a
# banner), its tags' <h3> follow its <h1> (an <h2> between), and with deep linking each
# operation's path is a link inside the operation's button (nested controls: the path is
# text; the address still deep-links, as `deepLinking` does). A small script names what it
# leaves nameless once rendered (fields, response tables, the Authorize dialog, its close
# button and its headings' levels, schema toggles), starts a button's name with the words it
# shows (the dialog's "Authorize" is named "Apply credentials": axe-core 4.14's
# label-content-name-mismatch) and lets scrolling code blocks take the keyboard's focus. Our
# stylesheet, web/api-docs.css, darkens its colours that fall below WCAG AA contrast.
DOCS_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Image pipeline API</title><link rel="stylesheet" href="api-docs?asset=swagger-ui.css">
<link rel="stylesheet" href="api-docs?asset=api-docs.css">
</head><body><div id="swagger-ui"></div>
<script src="api-docs?asset=swagger-ui-bundle.js"></script>
<script>
function accessibleMarkup() {
  const wrap = (render) => (Original, system) => (props) =>
    render(system.React.createElement, Original, props);
  return {wrapComponents: {
    InfoContainer: wrap((h, Original, props) => h("div", {role: "banner"}, h(Original, props))),
    operations: wrap((h, Original, props) => h("div", null,
      h("h2", {className: "operations-heading"}, "Operations"), h(Original, props))),
    DeepLink: wrap((h, Original, props) => h(Original, {...props, enabled: false})),
  }};
}
function nameWhatIsNameless(root) {
  for (const field of root.querySelectorAll("input, select, textarea")) {
    if (field.labels.length || field.getAttribute("aria-label")) continue;
    const row = field.closest("tr[data-param-name], tr[data-property-name]");
    const name = row ? row.dataset.paramName || row.dataset.propertyName
      : field.matches(".body-param__text") ? "Request body" : field.placeholder;
    if (name) field.setAttribute("aria-label", name);
  }
  for (const table of root.querySelectorAll("table[role=region]:not([aria-label])")) {
    const path = table.closest(".opblock")?.querySelector(".opblock-summary-path");
    table.setAttribute("aria-label", `Responses of ${path?.dataset.path || "the operation"}`);
  }
  for (const block of root.querySelectorAll("pre.microlight:not([tabindex])")) {
    block.tabIndex = 0;
  }
  for (const dialog of root.querySelectorAll(".modal-ux:not([role])")) {
    const title = dialog.querySelector(".modal-ux-header h3");
    Object.assign(dialog, {role: "dialog", ariaModal: "true"});
    if (title) {
      Object.assign(title, {id: title.id || "dialog-title", ariaLevel: "2"});
      dialog.setAttribute("aria-labelledby", title.id);
    }
  }
  for (const heading of root.querySelectorAll(".modal-ux h4:not([aria-level])")) {
    heading.ariaLevel = "3";
  }
  for (const heading of root.querySelectorAll(".modal-ux h6:not([aria-level])")) {
    heading.ariaLevel = "4";  // "Authorized", under its scheme's h4
  }
  for (const close of root.querySelectorAll("button.close-modal:not([aria-label])")) {
    close.setAttribute("aria-label", "Close");
  }
  for (const button of root.querySelectorAll("button[aria-label]")) {
    const text = button.textContent.trim(), label = button.getAttribute("aria-label");
    if (text && !label.toLowerCase().startsWith(text.toLowerCase())) {
      button.setAttribute("aria-label", `${text}: ${label.toLowerCase()}`);
    }
  }
  for (const toggle of root.querySelectorAll("button.model-box-control:not([aria-label])")) {
    if (toggle.textContent.trim()) continue;
    const property = toggle.closest("tr.property-row")?.querySelector("td")?.textContent;
    toggle.setAttribute("aria-label", `${(property || "").trim() || "schema"}: details`);
  }
}
let naming = false;
new MutationObserver(() => {
  if (naming) return;
  naming = true;
  requestAnimationFrame(() => { naming = false; nameWhatIsNameless(document); });
}).observe(document.getElementById("swagger-ui"),
  {childList: true, subtree: true, characterData: true, attributeFilter: ["aria-label"]});
window.ui = SwaggerUIBundle({url: "api/openapi.json", dom_id: "#swagger-ui",
  deepLinking: true, layout: "BaseLayout", validatorUrl: null, plugins: [accessibleMarkup]});
</script></body></html>"""


def docs_page(document: Callable[[], dict[str, Any]]) -> str:
    """Swagger UI when its files are there; else a plain table of `document()`'s routes."""
    return DOCS_PAGE if _swagger_dir() is not None else routes_table_page(document())


def docs_asset(name: str) -> tuple[str, str] | None:
    """(body, media type) of one whitelisted file of the docs page, or None. Only the
    whitelisted names reach the cache: a name asked for that is not one costs nothing kept
    (the cache holds at most the few files of DOCS_ASSETS, not every name anyone asks for)."""
    if name not in DOCS_ASSETS:
        return None
    return _read_asset(name)


@cache
def _read_asset(name: str) -> tuple[str, str] | None:
    media = DOCS_ASSETS[name]
    folder = WEB if name in _OUR_ASSETS else _swagger_dir()
    if folder is None:
        return None
    return (folder / name).read_text(encoding="utf-8"), media


def routes_table_page(spec: dict[str, Any]) -> str:
    """Every operation of the OpenAPI document `spec`, one row each."""
    items = []
    for path, methods in spec["paths"].items():
        for method, op in methods.items():
            codes = ", ".join(sorted(op.get("responses", {})))
            items.append(
                f"<tr><td><code>{method.upper()}</code></td><td><code>{html.escape(path)}"
                f"</code></td><td>{html.escape(op.get('summary', ''))}</td><td>{codes}</td></tr>"
            )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>Image pipeline API</title>"
        "<style>body{font-family:system-ui,sans-serif;margin:2rem}td{padding:.3rem .8rem;"
        "border-bottom:1px solid #ddd}</style></head><body><h1>Image pipeline API</h1>"
        "<p>Machine-readable: <a href='api/openapi.json'>api/openapi.json</a></p>"
        "<table><tr><th>Method</th><th>Path</th><th>What</th><th>Responses</th></tr>"
        + "".join(items)
        + "</table></body></html>"
    )
