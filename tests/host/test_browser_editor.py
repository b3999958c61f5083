"""The example workflows in the real ComfyUI editor: headless Chromium on the frontend that the
ComfyUI checkout's environment installs, served by a real ComfyUI server on 127.0.0.1 with this pack
and demo weights stored under the model names the workflows use (a correct setup).

Each workflow opens without any dialog, its "Read me" note is in view at the saved view, nothing
covers the nodes, text is drawn, and the Turbo graphs run: the loader's variant and the Turbo
sampler's "negative conditioning ignored" are read from the nodes as a person sees them.

Needs a ComfyUI checkout (as the other host tests), Chromium and its driver (Debian: `chromium`,
`chromium-driver`) and the `selenium` package; `tools/browser_deps.sh` installs them. Without them
the tests are skipped with the reason. Set ZINODES_BROWSER_SHOTS=DIR to keep a screenshot per step.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import workflow_layout

from zimage_nodes.tools import headless
from zimage_nodes.tools.comfy_server import ComfyServer

pytestmark = pytest.mark.host

PACK_DIR = Path(__file__).resolve().parents[2]
WORKFLOW_DIR = PACK_DIR / "example_workflows"
WORKFLOWS = sorted(p.stem for p in WORKFLOW_DIR.glob("*.json"))
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
VIEWPORT = workflow_layout.SMALL_WINDOW  # the smallest common laptop screen
SIZES = {"1366x768": workflow_layout.SMALL_WINDOW, "1920x1080": workflow_layout.LARGE_WINDOW}
SHOTS = os.environ.get("ZINODES_BROWSER_SHOTS")

COMFYUI, HOW = headless.find_comfyui()


def _missing() -> str | None:
    if COMFYUI is None:
        return f"needs a ComfyUI checkout: {HOW}"
    if CHROMIUM is None or CHROMEDRIVER is None:
        return "needs Chromium and chromedriver (Debian: apt-get install chromium chromium-driver; see tools/browser_deps.sh)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "needs the selenium package (pip install selenium; see tools/browser_deps.sh)"
    return None


if _missing():
    print(f"\n[browser tests] skipped: {_missing()}", file=sys.stderr)
    pytest.skip(_missing(), allow_module_level=True)


# -- a correct setup: the workflows' model names, filled with demo weights ------------------------


def write_models(root: Path) -> Path:
    """The files the example workflows name, in ComfyUI's folder layout, holding tiny random
    weights with the real key layouts (made by a subprocess on the host's own Python, since the
    builders need ComfyUI's model classes)."""
    script = f"""
import sys
from pathlib import Path
sys.path.insert(0, {str(COMFYUI)!r})
from comfy.cli_args import args
args.cpu = True
sys.path.append({str(PACK_DIR / "tools" / "site")!r})
from safetensors.torch import load_file, save_file
sys.path.append({str(PACK_DIR / "tests")!r})
from diffusers_layout import comfy_to_diffusers
from zimage_nodes.tools import demo_weights
root = Path({str(root)!r})
names = demo_weights.write_demo_models(root / "demo")
def place(folder, role, name):
    src = root / "demo" / folder / names[role]
    (root / folder).mkdir(parents=True, exist_ok=True)
    (root / folder / name).write_bytes(src.read_bytes())
place("diffusion_models", "turbo", "z_image_turbo_bf16.safetensors")
place("text_encoders", "text_encoder", "qwen_3_4b.safetensors")
place("vae", "vae", "ae.safetensors")
place("loras", "lora", "zimage_style_lora.safetensors")
# Z-Image base as the diffusers repository folder the Base workflows name.
sd = load_file(str(root / "demo" / "diffusion_models" / names["base"]))
transformer = root / "diffusion_models" / "Z-Image" / "transformer"
transformer.mkdir(parents=True, exist_ok=True)
save_file({{k: v.contiguous() for k, v in comfy_to_diffusers(sd).items()}},
          str(transformer / "diffusion_pytorch_model.safetensors"), metadata={{"modelspec.title": "Z-Image base demo"}})
# The SD 1.5 and ControlNet examples are only opened, never run: an empty file with the name is enough.
(root / "checkpoints").mkdir(exist_ok=True)
(root / "checkpoints" / "v1-5-pruned-emaonly-fp16.safetensors").touch()
(root / "model_patches").mkdir(exist_ok=True)
(root / "model_patches" / "Z-Image-Turbo-Fun-Controlnet-Union.safetensors").touch()
"""
    subprocess.run([sys.executable, "-c", script], check=True, cwd=str(COMFYUI), timeout=600)
    return root


def start_server(models: Path, output: Path):
    """The checkout's own ComfyUI server on a free 127.0.0.1 port with this pack (and only it)
    installed through a temporary folder, the demo models as its model folders."""
    kinds = ("diffusion_models", "text_encoders", "vae", "checkpoints", "loras", "model_patches")
    folders = {kind: [models / kind] for kind in kinds}
    server = ComfyServer(COMFYUI, model_folders=folders, output_dir=output, cpu=True).start()
    # The ControlNet example's control image: ComfyUI's own example picture, in this server's input folder.
    shutil.copy(COMFYUI / "input" / "example.png", server.input_directory / "example.png")
    # A first visit opens the template browser over the graph: this user has been here before.
    post_setting(server, "Comfy.TutorialCompleted", True)
    return server


def post_setting(server, setting: str, value):
    """Set an editor setting for the (only) user, through the server's settings API."""
    request = urllib.request.Request(f"{server.url}/settings/{setting}", data=json.dumps(value).encode(), method="POST")
    urllib.request.urlopen(request, timeout=30).read()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    models = write_models(tmp_path_factory.mktemp("models"))
    srv = start_server(models, tmp_path_factory.mktemp("output"))
    yield srv
    srv.stop()


# -- the browser ----------------------------------------------------------------------------------


def start_browser(url: str, profile: Path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        f"--window-size={VIEWPORT[0]},{VIEWPORT[1]}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    try:
        driver.set_script_timeout(120)
        driver.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {"width": VIEWPORT[0], "height": VIEWPORT[1], "deviceScaleFactor": 1, "mobile": False},
        )
        driver.get(url)
        wait_for(driver, "return !!(window.comfyAPI?.app?.app?.graph && window.comfyAPI.app.app.canvas)", 120)
        # The extensions are loaded before the graph is usable; ours must be among them.
        wait_for(
            driver,
            "return !!window.comfyAPI.app.app.extensions?.some(e => e.name === 'ZImageNodes.NodeMessages')",
            60,
        )
        # The editor then opens its start graph (restored or default) on its own; a workflow opened
        # before that would be replaced by it.
        try:
            wait_for(driver, "return window.comfyAPI.app.app.graph._nodes.length > 0", 30)
        except AssertionError:
            pass  # an empty start graph
        time.sleep(1.0)
    except Exception:
        driver.quit()
        raise
    return driver


@pytest.fixture(scope="module")
def browser(server, tmp_path_factory):
    driver = start_browser(server.url, tmp_path_factory.mktemp("chromium_profile"))
    yield driver
    driver.quit()


def wait_for(driver, script, timeout=30, *args):
    deadline = time.time() + timeout
    while True:
        value = driver.execute_script(script, *args)
        if value:
            return value
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for: {script}")
        time.sleep(0.25)


def shot(driver, name):
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(Path(SHOTS) / f"{name}.png"))


VISIBLE_DIALOGS = """
return [...document.querySelectorAll('[role=dialog], [role=alertdialog], .p-dialog')]
  .filter(el => { const r = el.getBoundingClientRect(); return r.width > 0 && r.height > 0
                  && getComputedStyle(el).visibility !== 'hidden'; })
  .map(el => (el.innerText || '').slice(0, 400));
"""

ERROR_TOASTS = """
return [...document.querySelectorAll('.p-toast-message-error, .p-toast-message-warn, [data-severity=error]')]
  .map(el => (el.innerText || '').slice(0, 400));
"""


def close_dialogs(driver):
    driver.execute_script(
        "document.querySelectorAll('[role=dialog] button[aria-label=Close], .p-dialog-close-button')"
        ".forEach(b => b.click())"
    )
    time.sleep(0.5)


def set_viewport(driver, size):
    """Resize the page as a person resizing the window would (the canvas follows)."""
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": size[0], "height": size[1], "deviceScaleFactor": 1, "mobile": False},
    )
    driver.execute_script("window.dispatchEvent(new Event('resize'))")
    time.sleep(0.5)


def open_workflow(driver, server, name, how="template"):
    """Open an example as a person does: `template` as the templates panel does (fetched from the
    pack's template route, handed to the app's loader with openSource 'template': frontend 1.49
    then fits the graph to the window), `file` as File > Open does (the file handed to the app's
    file handler: the saved view)."""
    templates = driver.execute_async_script(
        "const done = arguments[0]; fetch('/api/workflow_templates').then(r => r.json()).then(done)"
    )
    modules = [m for m, names in templates.items() if name in names]
    assert len(modules) == 1, f"{name} among the templates: {templates}"
    module = modules[0]
    driver.execute_async_script(
        """
        const [module, name, how, done] = arguments;
        const app = window.comfyAPI.app.app;
        fetch(`/api/workflow_templates/${module}/${name}.json`).then(r => r.json())
          .then(data => how === 'template'
            ? app.loadGraphData(data, true, true, name, {openSource: 'template'})
            : app.handleFile(new File([JSON.stringify(data)], `${name}.json`, {type: 'application/json'})))
          .then(() => done(true));
        """,
        module,
        name,
        how,
    )
    wait_for(
        driver,
        "return window.comfyAPI.app.app.graph._nodes.length === arguments[0]",
        30,
        len(json.loads((WORKFLOW_DIR / f"{name}.json").read_text(encoding="utf-8"))["nodes"]),
    )
    time.sleep(1.5)  # dialogs open asynchronously after the graph is configured


GEOMETRY = """
const app = window.comfyAPI.app.app, canvas = app.canvas, ds = canvas.ds;
const el = canvas.canvas, box = el.getBoundingClientRect();
const toScreen = (x, y) => [box.left + (x + ds.offset[0]) * ds.scale, box.top + (y + ds.offset[1]) * ds.scale];
const title = LiteGraph.NODE_TITLE_HEIGHT;
const nodes = app.graph._nodes.map(n => {
  const [x0, y0] = toScreen(n.pos[0], n.pos[1] - title);
  const [x1, y1] = toScreen(n.pos[0] + n.size[0], n.pos[1] + n.size[1]);
  // what a person would hit at points of the node: the canvas (or the node's own widgets), not a panel
  const probes = [[0.02, 0.02], [0.5, 0.02], [0.98, 0.02], [0.02, 0.5], [0.98, 0.98], [0.02, 0.98]].map(([fx, fy]) => {
    const px = x0 + (x1 - x0) * fx, py = y0 + (y1 - y0) * fy;
    const hit = document.elementFromPoint(px, py);
    return {x: px, y: py, free: !!hit && (hit === el || !!hit.closest('.dom-widget, .comfy-multiline-input, .comfy-markdown, [data-zinodes-message]'))};
  });
  return {id: n.id, type: n.type, title: n.title, pos: [...n.pos], size: [...n.size], screen: [x0, y0, x1, y1], probes};
});
const groups = (app.graph._groups || app.graph.groups || []).map(g => ({title: g.title, bounding: [...g._bounding ?? g.bounding]}));
return {scale: ds.scale, offset: [...ds.offset], viewport: [box.left, box.top, box.right, box.bottom],
        lowQuality: !!canvas.low_quality, nodes, groups,
        frontend: window.__COMFYUI_FRONTEND_VERSION__ || null};
"""


def in_view(rect, viewport):
    x0, y0, x1, y1 = rect
    left, top, right, bottom = viewport
    return left <= x0 and top <= y0 and x1 <= right and y1 <= bottom


def check_layout(geo, what):
    """As the editor computed the sizes (it grows nodes to fit their widgets): no overlaps."""
    assert workflow_layout.overlapping_nodes(geo["nodes"]) == [], what
    assert workflow_layout.group_title_clashes(geo["nodes"], geo["groups"]) == [], what


@pytest.mark.parametrize("how", ["template", "file"])
@pytest.mark.parametrize("size", list(SIZES))
@pytest.mark.parametrize("name", WORKFLOWS)
def test_workflow_opens_readable(browser, server, name, size, how):
    set_viewport(browser, SIZES[size])
    try:
        open_workflow(browser, server, name, how)
        shot(browser, f"open_{how}_{size}_{name}")
        dialogs = browser.execute_script(VISIBLE_DIALOGS)
        assert dialogs == [], f"{name} opened a dialog: {dialogs}"
        assert browser.execute_script(ERROR_TOASTS) == []
        close_dialogs(browser)
        geo = browser.execute_script(GEOMETRY)
    finally:
        close_dialogs(browser)
        set_viewport(browser, VIEWPORT)
    fitted = workflow_layout.fitted_view(geo["nodes"], SIZES[size])["scale"]
    print(f"{name} by {how} at {size}: frontend {geo['frontend']}, zoom {geo['scale']:.3f} (fitted {fitted:.3f})")
    assert not geo["lowQuality"], f"{name}: at zoom {geo['scale']:.3f} the editor draws no text"
    assert geo["scale"] >= workflow_layout.TEXT_ZOOM_THRESHOLD
    assert fitted >= workflow_layout.READABLE_ZOOM, f"{name}: fitted zoom {fitted:.3f} at {size}"
    notes = [n for n in geo["nodes"] if n["type"] in ("MarkdownNote", "Note")]
    loaders = [n for n in geo["nodes"] if n["type"] in ("ZINodesLoader", "CheckpointLoaderSimple")]
    assert notes and loaders
    for node in notes + loaders:
        assert in_view(node["screen"], geo["viewport"]), f"{name}: {node['type']} not in view: {node['screen']}"
    check_layout(geo, name)


def node_state(driver, node_id):
    """What the node shows: its message box's text if one is drawn and visible on the page."""
    return driver.execute_script(
        """
        const app = window.comfyAPI.app.app, node = app.graph.getNodeById(arguments[0]);
        const widget = node.widgets?.find(w => w.name === 'zinodes_message');
        if (!widget) return {message: null};
        const el = widget.element, r = el.getBoundingClientRect();
        const hit = document.elementFromPoint(r.left + r.width / 2, r.top + Math.min(8, r.height / 2));
        return {message: el.innerText, visible: r.width > 20 && r.height > 10 && !!hit && el.contains(hit),
                rect: [r.left, r.top, r.right, r.bottom]};
        """,
        node_id,
    )


def run_current_graph(driver, small=64, timeout=300):
    """Queue the open graph as the Run button does, at a small size; wait for it to finish."""
    driver.execute_script(
        """
        const app = window.comfyAPI.app.app, api = window.comfyAPI.api.api;
        for (const node of app.graph._nodes)
          for (const w of node.widgets ?? [])
            if (node.type.startsWith('EmptySD3LatentImage') && (w.name === 'width' || w.name === 'height')) w.value = arguments[0];
        window.__zinodes_run = null;
        const done = (state) => (e) => { window.__zinodes_run = {state, detail: e.detail ?? null}; };
        api.addEventListener('execution_success', done('success'), {once: true});
        api.addEventListener('execution_error', done('error'), {once: true});
        app.queuePrompt(0, 1);
        """,
        small,
    )
    result = wait_for(driver, "return window.__zinodes_run", timeout)
    assert result["state"] == "success", result
    time.sleep(1.0)  # the last 'executed' messages are handled after the success event


def exported_sizes(driver):
    return driver.execute_script(
        "const data = window.comfyAPI.app.app.graph.serialize();"
        "return Object.fromEntries(data.nodes.filter(n => n.type.startsWith('ZINodes'))"
        ".map(n => [String(n.id), [...n.size]]))"
    )


def nodes_of(driver, node_type):
    return driver.execute_script(
        "return window.comfyAPI.app.app.graph._nodes.filter(n => n.type === arguments[0]).map(n => n.id)", node_type
    )


def run_example(driver, server, name):
    """An example opened in the editor, its dialogs closed, queued and run to the end (screenshot
    when SHOTS is set)."""
    open_workflow(driver, server, name)
    close_dialogs(driver)
    before = exported_sizes(driver)
    run_current_graph(driver)
    shot(driver, f"run_{name}")
    check_layout(driver.execute_script(GEOMETRY), f"{name} after a run")
    # Saved and exported, the nodes keep the sizes they had before the messages.
    assert exported_sizes(driver) == before


def test_turbo_runs_and_the_nodes_say_what_they_did(browser, server):
    run_example(browser, server, "z_image_turbo_text_to_image")
    (loader,) = nodes_of(browser, "ZINodesLoader")
    (sampler,) = nodes_of(browser, "ZINodesTurboSampler")
    state = node_state(browser, loader)
    print("Turbo loader shows:", state)
    assert state["visible"], state
    assert state["message"].startswith("Z-Image-Turbo:") and "Steps 8, cfg 1, shift 3" in state["message"]
    assert "negative prompts have no effect" in state["message"]
    # No negative is wired here, so the sampler has nothing to say, and says nothing.
    assert node_state(browser, sampler)["message"] is None
    # Output only: the message is neither saved with the workflow nor sent as an input.
    saved = browser.execute_script(
        "const app = window.comfyAPI.app.app, data = (app.rootGraph ?? app.graph).serialize();"
        "return data.nodes.find(n => String(n.id) === String(arguments[0]))?.widgets_values ?? data.nodes",
        loader,
    )
    assert len(saved) == 5, saved
    prompt = browser.execute_async_script(
        "const done = arguments[arguments.length - 1];window.comfyAPI.app.app.graphToPrompt().then(p => done(p.output))"
    )
    assert set(prompt[str(loader)]["inputs"]) == {"diffusion_model", "text_encoder", "vae", "variant", "weight_dtype"}


def test_messages_come_back_after_a_tab_switch(browser, server):
    run_example(browser, server, "z_image_turbo_text_to_image")
    (loader,) = nodes_of(browser, "ZINodesLoader")
    first = browser.execute_script("return window.comfyAPI.app.app.extensionManager.workflow?.activeWorkflow?.path")
    open_workflow(browser, server, "z_image_turbo_nag_negative")
    close_dialogs(browser)
    browser.execute_script(
        "window.comfyAPI.app.app.extensionManager.command.execute('Workspace.PreviousOpenedWorkflow')"
    )
    wait_for(
        browser,
        "return window.comfyAPI.app.app.extensionManager.workflow?.activeWorkflow?.path === arguments[0]",
        30,
        first,
    )
    time.sleep(1.0)
    shot(browser, "tab_switch_back")
    state = node_state(browser, loader)
    print("after the tab switch the loader shows:", state)
    assert state["visible"] and state["message"].startswith("Z-Image-Turbo:"), state
    check_layout(browser.execute_script(GEOMETRY), "after the tab switch")
    # Set to another variant since, the loader would say something else: no stale message returns.
    browser.execute_script(
        "const node = window.comfyAPI.app.app.graph.getNodeById(arguments[0]);"
        "node.widgets.find(w => w.name === 'variant').value = 'base';"
        # as after a person's edit: the workflow's change tracker takes the new state
        "window.comfyAPI.app.app.extensionManager.workflow?.activeWorkflow?.changeTracker?.checkState();",
        loader,
    )
    for command in ("Workspace.NextOpenedWorkflow", "Workspace.PreviousOpenedWorkflow"):
        browser.execute_script(f"window.comfyAPI.app.app.extensionManager.command.execute('{command}')")
        time.sleep(1.5)
    assert (
        browser.execute_script("return window.comfyAPI.app.app.extensionManager.workflow?.activeWorkflow?.path")
        == first
    )
    variant = browser.execute_script(
        "return window.comfyAPI.app.app.graph.getNodeById(arguments[0]).widgets.find(w => w.name === 'variant').value",
        loader,
    )
    assert variant == "base"
    assert node_state(browser, loader)["message"] is None


def test_a_cached_loader_still_says_what_it_loaded(browser, server):
    # The NAG workflow's loader has the Turbo workflow's inputs: after the Turbo run ComfyUI takes
    # its result from the cache and does not run it.
    run_example(browser, server, "z_image_turbo_text_to_image")
    browser.execute_script(
        "window.__zinodes_executed = [];"
        "window.comfyAPI.api.api.addEventListener('executed', e => window.__zinodes_executed.push("
        "String(e.detail?.display_node ?? e.detail?.node)))"
    )
    run_example(browser, server, "z_image_turbo_nag_negative")
    (loader,) = nodes_of(browser, "ZINodesLoader")
    state = node_state(browser, loader)
    print("cached loader shows:", state)
    assert state["visible"] and state["message"].startswith("Z-Image-Turbo:"), state
    # Where the host knows has_intermediate_output (ComfyUI v0.3x), it re-sends the cached
    # loader's text itself; older hosts do not, and the browser's kept text shows.
    info = browser.execute_async_script(
        "const done = arguments[0]; fetch('/api/object_info/ZINodesLoader').then(r => r.json()).then(done)"
    )
    resent = str(loader) in browser.execute_script("return window.__zinodes_executed")
    print("has_intermediate_output:", info["ZINodesLoader"].get("has_intermediate_output"), "re-sent:", resent)
    assert resent == bool(info["ZINodesLoader"].get("has_intermediate_output"))


def test_a_cached_loader_says_it_after_a_page_reload_too(browser, server):
    # The server still holds the loader's result; the reloaded page never saw it run.
    run_example(browser, server, "z_image_turbo_text_to_image")
    browser.refresh()
    wait_for(browser, "return !!(window.comfyAPI?.app?.app?.graph && window.comfyAPI.app.app.canvas)", 120)
    wait_for(
        browser,
        "return !!window.comfyAPI.app.app.extensions?.some(e => e.name === 'ZImageNodes.NodeMessages')",
        60,
    )
    time.sleep(2.0)  # the editor restores its open workflows
    run_example(browser, server, "z_image_turbo_nag_negative")
    (loader,) = nodes_of(browser, "ZINodesLoader")
    state = node_state(browser, loader)
    print("cached loader after a reload shows:", state)
    assert state["visible"] and state["message"].startswith("Z-Image-Turbo:"), state


def test_a_long_message_scrolls_instead_of_covering_the_node_below(browser, server):
    # The guider's Turbo warning is longer than the room the layout leaves below the guider: the
    # box takes the room and scrolls; RandomNoise below stays uncovered.
    open_workflow(browser, server, "z_image_base_negative_prompt")
    close_dialogs(browser)
    browser.execute_script(
        """
        const app = window.comfyAPI.app.app;
        for (const node of app.graph._nodes) {
          if (node.type !== 'ZINodesLoader') continue;
          node.widgets.find(w => w.name === 'variant').value = 'turbo';
        }
        for (const node of app.graph._nodes)
          if (node.type === 'ZINodesScheduler') node.widgets.find(w => w.name === 'steps').value = 2;
        """
    )
    run_current_graph(browser)
    shot(browser, "long_message")
    (guider,) = nodes_of(browser, "ZINodesCFGGuider")
    state = node_state(browser, guider)
    print("guider on Turbo shows:", state)
    assert state["visible"] and "CFG-distilled" in state["message"], state
    check_layout(browser.execute_script(GEOMETRY), "guider warning shown")


def test_base_vs_turbo_shows_the_ignored_negative_and_both_variants(browser, server):
    run_example(browser, server, "z_image_base_vs_turbo")
    (sampler,) = nodes_of(browser, "ZINodesTurboSampler")
    (guider,) = nodes_of(browser, "ZINodesCFGGuider")
    messages = {node: node_state(browser, node) for node in nodes_of(browser, "ZINodesLoader")}
    print("loaders show:", messages)
    texts = sorted(m["message"].split(":")[0] for m in messages.values())
    assert texts == ["Z-Image (base)", "Z-Image-Turbo"], messages
    assert all(m["visible"] for m in messages.values()), messages
    state = node_state(browser, sampler)
    print("Turbo sampler shows:", state)
    assert state["visible"] and state["message"].startswith("negative conditioning ignored"), state
    assert node_state(browser, guider)["message"] is None  # guiding the base model: nothing to warn about
    # Unwire the negative and run again: the sampler runs afresh and its old message goes; the
    # loaders are cached and keep theirs.
    browser.execute_script(
        """
        const node = window.comfyAPI.app.app.graph.getNodeById(arguments[0]);
        node.disconnectInput(node.inputs.findIndex(i => i.name === 'negative'));
        """,
        sampler,
    )
    run_current_graph(browser)
    shot(browser, "rerun_z_image_base_vs_turbo")
    assert node_state(browser, sampler)["message"] is None
    assert all(node_state(browser, node)["message"] for node in messages)


def test_template_browser_shows_each_workflow_with_its_thumbnail(browser, server):
    templates = browser.execute_async_script(
        "const done = arguments[0]; fetch('/api/workflow_templates').then(r => r.json()).then(done)"
    )
    (module,) = [m for m, names in templates.items() if set(WORKFLOWS) <= set(names)]
    browser.execute_script("window.comfyAPI.app.app.extensionManager.command.execute('Comfy.BrowseTemplates')")
    wait_for(browser, "return document.querySelectorAll('[role=dialog] img').length > 0", 60)
    # The pack's category in the browser's navigation, as a person would pick it.
    clicked = browser.execute_script(
        """
        const label = arguments[0];
        const items = [...document.querySelectorAll('[role=dialog] *')].filter(
          el => el.children.length === 0 && el.textContent.trim() === label);
        if (!items.length) return false;
        (items[0].closest('button, a, li, [role=button], [role=option], [role=menuitem]') ?? items[0]).click();
        return true;
        """,
        module,
    )
    assert clicked, f"no '{module}' category in the template browser"
    time.sleep(2)
    shot(browser, "template_browser")
    cards = browser.execute_script(
        """
        const names = arguments[0];
        return names.map(name => {
          const title = [...document.querySelectorAll('[role=dialog] *')].find(
            el => el.children.length === 0 && el.textContent.trim() === name);
          let card = title;
          while (card && !card.querySelector('img')) card = card.parentElement;
          const img = card?.querySelector('img');
          return {name, card: !!card, loaded: !!img && img.complete && img.naturalWidth > 0,
                  size: [img?.naturalWidth ?? 0, img?.naturalHeight ?? 0], src: (img?.currentSrc ?? '').slice(0, 160)};
        });
        """,
        WORKFLOWS,
    )
    print("template cards:", cards)
    for card in cards:
        # The pack's thumbnails are 600x600 screenshots; the browser's generic card image is not.
        assert card["card"] and card["loaded"] and card["size"] == [600, 600], card
    close_dialogs(browser)
