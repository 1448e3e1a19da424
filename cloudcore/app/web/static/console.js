// The console page: noVNC (from npm, served under /ui/assets/novnc) on the one-use WebSocket
// URL the page was given. No inline script: the URL comes from a data attribute.
import RFB from "/ui/assets/novnc/core/rfb.js";

const screen = document.getElementById("screen");
const status = document.getElementById("console-status");
const rfb = new RFB(screen, screen.dataset.url);
rfb.scaleViewport = true;
rfb.addEventListener("connect", () => {
  status.textContent = "Connected.";
  screen.dataset.connected = "true";
  rfb.focus();
});
rfb.addEventListener("disconnect", (e) => {
  status.textContent = e.detail.clean
    ? "Disconnected. Reload the page for a new console."
    : "The console connection failed or was lost. Reload the page to try again.";
  screen.dataset.connected = "false";
});
rfb.addEventListener("desktopname", (e) => {
  screen.dataset.desktop = e.detail.name;
});
document.getElementById("ctrl-alt-del").addEventListener("click", () => rfb.sendCtrlAltDel());
