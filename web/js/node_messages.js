// Shows on the node the text Z-Image nodes send back when they run (the loader's variant and why,
// the Turbo sampler's "negative conditioning ignored", the guider's Turbo warning). ComfyUI delivers
// it to the browser as the node's `text` output, but the frontend has no generic display for that:
// without this extension the message only reaches the server log.
//
// The box never covers another node: the node grows only into the free room below it (the example
// workflows reserve it, tests/workflow_layout.py rule 4) and the box scrolls when the text needs
// more; the node's width never changes. A saved or exported workflow keeps the size the node had
// before the message. Messages are kept per workflow (and across a page reload), so they come back
// after a tab switch and for nodes whose result ComfyUI took from its cache.
//
// Only the frontend's public extension API is used (app.registerExtension, onExecuted,
// onSerialize, afterConfigureGraph, the api event bus, node.addDOMWidget).
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const NODE_PREFIX = "ZINodes";
const WIDGET_NAME = "zinodes_message";
const LINE_HEIGHT = 16;
const PADDING = 6;
// 12px UI font, rounded up: only used to size the box before the browser lays the text out.
const AVERAGE_CHAR_WIDTH = 7;
const ONE_LINE = LINE_HEIGHT + 2 * PADDING + 4;
// What the editor draws above a node's `pos`: title bar and source badge (tests/workflow_layout.py).
const ABOVE_NODE = 30 + 24;
const GAP = 6;
const STORAGE_KEY = "ZImageNodes.NodeMessages";
const KEPT_WORKFLOWS = 30;

function messageOf(output) {
  const text = output?.text;
  if (text == null) return "";
  return (Array.isArray(text) ? text : [text])
    .filter((line) => typeof line === "string" && line.trim())
    .join("\n");
}

function isOurs(node) {
  const type = node?.comfyClass ?? node?.type;
  return typeof type === "string" && type.startsWith(NODE_PREFIX);
}

// -- messages per workflow, kept in localStorage so a reload does not lose them -------------------

function workflowKey() {
  const workflow = app.extensionManager?.workflow?.activeWorkflow;
  return workflow?.path ?? workflow?.key ?? "default";
}

function loadStore() {
  try {
    return JSON.parse(localStorage.getItem(STORAGE_KEY) ?? "{}") ?? {};
  } catch {
    return {};
  }
}

function saveStore(store) {
  const keys = Object.keys(store);
  for (const key of keys.slice(0, Math.max(0, keys.length - KEPT_WORKFLOWS))) {
    if (key !== BY_INPUTS) delete store[key];
  }
  try {
    localStorage.setItem(STORAGE_KEY, JSON.stringify(store));
  } catch {
    // Storage full or disabled: messages then last as long as the page.
  }
}

const store = loadStore();

// A node with no wired input (the loader) says the same for the same widget values, whichever
// workflow it is in: what it said is also kept under those values, for when a cached result of it
// shows up in another workflow.
const BY_INPUTS = "@inputs";

function inputSignature(node) {
  if (node.inputs?.some((input) => input.link != null)) return null;
  const values = (node.widgets ?? []).filter((w) => w.name !== WIDGET_NAME).map((w) => w.value);
  return `${node.type} ${JSON.stringify(values)}`;
}

function remember(node, text) {
  const signature = inputSignature(node);
  if (signature && text) {
    const byInputs = { ...(store[BY_INPUTS] ?? {}) };
    delete byInputs[signature];
    byInputs[signature] = text;
    const names = Object.keys(byInputs);
    for (const old of names.slice(0, Math.max(0, names.length - KEPT_WORKFLOWS))) delete byInputs[old];
    delete store[BY_INPUTS];
    store[BY_INPUTS] = byInputs;
  }
  const key = workflowKey();
  const messages = { ...(store[key] ?? {}) };
  if (text) messages[String(node.id)] = { type: node.type, signature, text };
  else delete messages[String(node.id)];
  delete store[key]; // re-inserted last: the most recently used workflows are kept
  store[key] = messages;
  saveStore(store);
}

function recalled(node) {
  const kept = store[workflowKey()]?.[String(node.id)];
  if (kept && kept.type === node.type) {
    // A loader whose files were changed since would say something else: nothing is shown.
    return kept.signature && kept.signature !== inputSignature(node) ? "" : kept.text;
  }
  return messageOf(app.nodeOutputs?.[String(node.id)]);
}

function recalledByInputs(node) {
  const signature = inputSignature(node);
  return (signature && store[BY_INPUTS]?.[signature]) || "";
}

// -- the box ---------------------------------------------------------------------------------------

function estimatedHeight(node, text) {
  const perLine = Math.max(10, Math.floor((node.size[0] - 50) / AVERAGE_CHAR_WIDTH));
  const lines = text.split("\n").reduce((n, para) => n + Math.max(1, Math.ceil(para.length / perLine)), 0);
  return (lines + 0.5) * LINE_HEIGHT + 2 * PADDING + 4;
}

function findWidget(node) {
  return node.widgets?.find((w) => w.name === WIDGET_NAME);
}

// Free room below a node's own (pre-message) bottom, across its width, before the next node's
// badge; Infinity when nothing is below.
function roomBelow(node, bottom) {
  const x0 = node.pos[0];
  const x1 = x0 + node.size[0];
  let top = Infinity;
  for (const other of node.graph?._nodes ?? node.graph?.nodes ?? []) {
    if (other === node) continue;
    const otherTop = other.pos[1] - ABOVE_NODE;
    if (otherTop >= bottom - 1 && other.pos[0] < x1 && x0 < other.pos[0] + other.size[0]) {
      top = Math.min(top, otherTop);
    }
  }
  return top - bottom - GAP;
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

function fit(node, widget) {
  const before = widget.zinodesHeightBefore;
  const needed = estimatedHeight(node, widget.element.textContent || "");
  widget.zinodesMaxHeight = needed;
  // The node's height with the box at one line, then with the whole text.
  const smallest = node.computeSize()[1];
  const wanted = smallest + Math.max(0, needed - ONE_LINE);
  const limit = before + roomBelow(node, node.pos[1] + before);
  const height = Math.max(before, smallest, Math.min(wanted, limit));
  node.setSize([node.size[0], height]);
  widget.zinodesGrownTo = node.size[1];
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
    const heightBefore = node.size[1];
    widget = node.addDOMWidget(WIDGET_NAME, "zinodes_message", element, {
      // Never saved into the workflow, never sent to the server: it is output, not an input.
      serialize: false,
      hideOnZoom: false,
      getValue: () => element.textContent,
      setValue: (value) => {
        element.textContent = value ?? "";
      },
      // One line at least (it scrolls); the whole text when the room below the node allows.
      getMinHeight: () => ONE_LINE,
      getMaxHeight: () => widget?.zinodesMaxHeight ?? ONE_LINE,
    });
    widget.serialize = false;
    widget.zinodesHeightBefore = heightBefore;
  }
  widget.element.textContent = text;
  widget.element.title = text;
  fit(node, widget);
  node.setDirtyCanvas?.(true, true);
}

function restoreMessages(cachedIds = null) {
  const graph = app.graph;
  for (const node of graph?._nodes ?? graph?.nodes ?? []) {
    if (!isOurs(node) || findWidget(node)) continue;
    if (cachedIds && !cachedIds.has(String(node.id))) continue;
    const text = recalled(node) || (cachedIds ? recalledByInputs(node) : "");
    if (text) {
      if (cachedIds) remember(node, text);
      showMessage(node, text);
    }
  }
}

app.registerExtension({
  name: "ZImageNodes.NodeMessages",

  async setup() {
    // A node that runs again says afresh what it has to say; when it has nothing to say this time
    // (e.g. the negative was unwired), the old message must not linger.
    api.addEventListener("executing", ({ detail }) => {
      const id = typeof detail === "object" && detail !== null ? (detail.display_node ?? detail.node) : detail;
      if (id == null) return;
      const node = app.graph?.getNodeById?.(id);
      if (isOurs(node)) {
        removeMessage(node);
        remember(node, "");
      }
    });
    // Nodes ComfyUI takes from its cache do not run. ComfyUI v0.3x re-sends their text (the nodes
    // set has_intermediate_output); older hosts send nothing, so the text kept for the node shows.
    api.addEventListener("execution_cached", ({ detail }) => {
      const ids = new Set((detail?.nodes ?? []).map(String));
      if (ids.size) restoreMessages(ids);
    });
  },

  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!nodeData?.name?.startsWith(NODE_PREFIX)) return;
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (output) {
      onExecuted?.apply(this, arguments);
      const text = messageOf(output);
      remember(this, text);
      showMessage(this, text);
    };
    // Saved and exported workflows keep the node's size from before the message.
    const onSerialize = nodeType.prototype.onSerialize;
    nodeType.prototype.onSerialize = function (data) {
      onSerialize?.apply(this, arguments);
      const widget = findWidget(this);
      if (widget?.zinodesHeightBefore != null && Array.isArray(data?.size)) {
        data.size = [data.size[0], widget.zinodesHeightBefore];
      }
    };
  },

  async afterConfigureGraph() {
    // A workflow opened or switched back to: its messages come back once the frontend has made it
    // the active workflow and restored its node outputs.
    requestAnimationFrame(() => setTimeout(() => restoreMessages(), 0));
  },
});
