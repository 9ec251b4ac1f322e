#!/usr/bin/env bash
# Vendors the built Swagger UI and ReDoc files that /docs and /redoc serve, so that the API's
# documentation pages work behind a firewall (FastAPI's defaults load them from a CDN).
# The versions are pinned here; re-run after changing them and commit tuneforge/app/static/docs/.
set -euo pipefail
SWAGGER_UI_DIST=5.35.0
REDOC=2.5.4

root="$(cd "$(dirname "$0")/.." && pwd)"
dest="$root/tuneforge/app/static/docs"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"
npm pack --silent "swagger-ui-dist@$SWAGGER_UI_DIST" "redoc@$REDOC" >/dev/null
mkdir -p swagger redoc
tar -xzf "swagger-ui-dist-$SWAGGER_UI_DIST.tgz" -C swagger
tar -xzf "redoc-$REDOC.tgz" -C redoc
mkdir -p "$dest"
cp swagger/package/swagger-ui-bundle.js swagger/package/swagger-ui.css swagger/package/favicon-32x32.png "$dest/"
cp swagger/package/LICENSE "$dest/LICENSE.swagger-ui"
[ -f swagger/package/NOTICE ] && cp swagger/package/NOTICE "$dest/NOTICE.swagger-ui"
cp redoc/package/bundles/redoc.standalone.js "$dest/"
cp redoc/package/LICENSE "$dest/LICENSE.redoc"
cat > "$dest/VERSIONS" <<TXT
swagger-ui-dist $SWAGGER_UI_DIST (npm; Apache-2.0)
redoc $REDOC (npm; MIT)
Copied by scripts/vendor_docs_assets.sh.
TXT
echo "vendored into $dest"
