// While the cell that started a run is still executing, a click on Stop/Pause normally reaches
// the kernel over a subshell and the kernel acknowledges it (the `acks` count goes up). Where it
// does not (no subshells), the click would wait for the cell to end, so after `grace_ms` without
// an acknowledgement this invisible widget interrupts the kernel through the Jupyter server's
// REST API (what the ■ toolbar button does); the Python side turns that KeyboardInterrupt into a
// clean pause and lets the queued click decide.
const bound = new Set();

function pageConfig() {
  try {
    return JSON.parse(document.getElementById("jupyter-config-data").textContent);
  } catch (e) {
    return {};
  }
}

function xsrfToken() {
  const m = document.cookie.match(/(?:^|;\s*)_xsrf=([^;]*)/);
  return m ? decodeURIComponent(m[1]) : "";
}

async function interruptKernel(kernelId) {
  const cfg = pageConfig();
  const base = (cfg.baseUrl || "/").replace(/\/?$/, "/");
  const headers = { "X-XSRFToken": xsrfToken() };
  if (cfg.token) headers["Authorization"] = `token ${cfg.token}`;
  const url = `${base}api/kernels/${encodeURIComponent(kernelId)}/interrupt`;
  const response = await fetch(url, { method: "POST", headers, credentials: "same-origin" });
  if (!response.ok) console.warn(`bigmodel_nb: kernel interrupt answered ${response.status}`);
}

export default {
  render({ model, el }) {
    el.style.display = "none";
    const uid = model.get("uid");
    if (bound.has(uid)) return; // several views of one dashboard: interrupt once per click
    bound.add(uid);
    const onClick = (event) => {
      const button = event.target.closest && event.target.closest(`.bmnb-interrupts-${uid}`);
      if (!button || button.disabled || !model.get("armed") || !model.get("kernel_id")) return;
      const acks = model.get("acks");
      setTimeout(() => {
        if (model.get("acks") !== acks || !model.get("armed")) return; // the kernel heard the click
        model.set("armed", false); // one interrupt per blocked cell
        interruptKernel(model.get("kernel_id")).catch((e) => console.warn("bigmodel_nb:", e));
      }, model.get("grace_ms"));
    };
    // Capture phase: runs before the button's own handler sends the click message.
    document.addEventListener("click", onClick, true);
    return () => {
      document.removeEventListener("click", onClick, true);
      bound.delete(uid);
    };
  },
};
