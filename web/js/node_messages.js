// Shows on the node the text Z-Image nodes send back when they run (the loader's variant and why,
// the Turbo sampler's "negative conditioning ignored", the guider's Turbo warning). ComfyUI delivers
// it to the browser as the node's `text` output, but the frontend has no generic display for that:
// without this extension the message only reaches the server log.
//
// Only the frontend's public extension API is used (app.registerExtension, onExecuted, the api
// event bus, node.addDOMWidget), so it works with classic canvas nodes and with Vue nodes alike.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const NODE_PREFIX = "ZINodes";
const WIDGET_NAME = "zinodes_message";
const LINE_HEIGHT = 16;
const PADDING = 6;
// 12px UI font, rounded up: only used to size the box before the browser lays the text out, and a
// box one line too tall reads better than one that scrolls.
const AVERAGE_CHAR_WIDTH = 7;

function messageOf(output) {
  const text = output?.text;
  if (text == null) return "";
  return (Array.isArray(text) ? text : [text])
    .filter((line) => typeof line === "string" && line.trim())
    .join("\n");
}

function estimatedHeight(node, text) {
  const perLine = Math.max(10, Math.floor((node.size[0] - 50) / AVERAGE_CHAR_WIDTH));
  const lines = text.split("\n").reduce((n, para) => n + Math.max(1, Math.ceil(para.length / perLine)), 0);
  return (lines + 0.5) * LINE_HEIGHT + 2 * PADDING + 4;
}

function findWidget(node) {
  return node.widgets?.find((w) => w.name === WIDGET_NAME);
}

function removeMessage(node) {
  const index = node.widgets?.findIndex((w) => w.name === WIDGET_NAME) ?? -1;
  if (index < 0) return;
  const widget = node.widgets[index];
  widget.onRemove?.();
  node.widgets.splice(index, 1);
  // Give back the room the message took, unless the node was resized meanwhile.
  if (widget.zinodesGrownTo === node.size[1] && widget.zinodesHeightBefore != null) {
    node.setSize([node.size[0], Math.max(node.computeSize()[1], widget.zinodesHeightBefore)]);
  }
  node.setDirtyCanvas?.(true, true);
}

function showMessage(node, text) {
  if (!text) {
    removeMessage(node);
    return;
  }
  let widget = findWidget(node);
  if (!widget) {
    const element = document.createElement("div");
    element.className = "zinodes-message";
    element.setAttribute("data-zinodes-message", "");
    Object.assign(element.style, {
      boxSizing: "border-box",
      whiteSpace: "pre-wrap",
      overflowWrap: "anywhere",
      overflowY: "auto",
      font: `12px/${LINE_HEIGHT}px sans-serif`,
      padding: `${PADDING}px 8px`,
      borderRadius: "6px",
      borderLeft: "3px solid #d9a441",
      background: "var(--comfy-input-bg, #222)",
      color: "var(--input-text, #ddd)",
      userSelect: "text",
    });
    widget = node.addDOMWidget(WIDGET_NAME, "zinodes_message", element, {
      // Never saved into the workflow, never sent to the server: it is output, not an input.
      serialize: false,
      hideOnZoom: false,
      getValue: () => element.textContent,
      setValue: (value) => {
        element.textContent = value ?? "";
      },
      getMinHeight: () => estimatedHeight(node, element.textContent || ""),
    });
    widget.serialize = false;
    widget.zinodesHeightBefore = node.size[1];
  }
  widget.element.textContent = text;
  widget.element.title = text;
  const needed = node.computeSize();
  node.setSize([Math.max(node.size[0], needed[0]), Math.max(node.size[1], needed[1])]);
  widget.zinodesGrownTo = node.size[1];
  node.setDirtyCanvas?.(true, true);
}

function isOurs(node) {
  const type = node?.comfyClass ?? node?.type;
  return typeof type === "string" && type.startsWith(NODE_PREFIX);
}

app.registerExtension({
  name: "ZImageNodes.NodeMessages",

  async setup() {
    // A node that runs again says afresh what it has to say; when it has nothing to say this time
    // (e.g. the negative was unwired), the old message must not linger. Cached nodes are not
    // re-run, and ComfyUI re-sends their message, so theirs stays.
    api.addEventListener("executing", ({ detail }) => {
      const id = typeof detail === "object" && detail !== null ? (detail.display_node ?? detail.node) : detail;
      if (id == null) return;
      const node = app.graph?.getNodeById?.(id);
      if (isOurs(node)) removeMessage(node);
    });
  },

  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!nodeData?.name?.startsWith(NODE_PREFIX)) return;
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (output) {
      onExecuted?.apply(this, arguments);
      showMessage(this, messageOf(output));
    };
  },

  loadedGraphNode(node) {
    // Outputs the frontend kept for this graph (e.g. after switching workflow tabs) come back too.
    if (!isOurs(node)) return;
    const output = app.nodeOutputs?.[String(node.id)];
    if (output) showMessage(node, messageOf(output));
  },
});
