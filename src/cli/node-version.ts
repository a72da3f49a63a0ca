/**
 * Imported first by main.ts: on a Node that isolated-vm 7 does not support, say so in one line and exit 1 instead of
 * failing later on a missing native build.
 */
export const SUPPORTED_NODE_LINES = [24, 26];

const major = Number(process.versions.node.split('.')[0]);
if (!SUPPORTED_NODE_LINES.includes(major)) {
  process.stderr.write(
    `posthog-plugins: runs on Node ${SUPPORTED_NODE_LINES.join(' or ')}, not ${process.version} (${process.execPath}); ` +
      '`make build` sets one up under .node/, or set POSTHOG_PLUGINS_NODE to a supported node binary\n',
  );
  process.exit(1);
}
