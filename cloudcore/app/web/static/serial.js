// The serial console page: the one-use WebSocket URL the page was given relays the VM's first
// serial port, raw bytes both ways. Output is shown as text (terminal escape sequences left
// out); keys pressed in the terminal are sent as a terminal sends them.
const terminal = document.getElementById("terminal");
const status = document.getElementById("serial-status");
const socket = new WebSocket(terminal.dataset.url, ["binary"]);
socket.binaryType = "arraybuffer";
const decoder = new TextDecoder();
const encoder = new TextEncoder();
// CSI and OSC sequences, character set choices (ESC ( B), other two-byte escapes (ESC c, the
// reset SeaBIOS sends), and carriage returns before a newline.
const ESCAPES = /\x1b\[[0-?]*[ -\/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[()*+][0-~]|\x1b[0-~]|\r(?=\n)/g;
const MAX_TEXT = 200000;

socket.addEventListener("open", () => {
  status.textContent = "Connected.";
  terminal.dataset.connected = "true";
  terminal.focus();
});
// What arrived, as text: a sequence may come split over several messages, so the escapes are
// left out of the whole (the newest MAX_TEXT characters), not of each message.
let received = "";
socket.addEventListener("message", (event) => {
  received += decoder.decode(new Uint8Array(event.data), { stream: true });
  if (received.length > MAX_TEXT) received = received.slice(received.length - MAX_TEXT);
  terminal.textContent = received.replace(ESCAPES, "");
  terminal.scrollTop = terminal.scrollHeight;
});
socket.addEventListener("close", () => {
  status.textContent = "Disconnected. Reload the page for a new serial console.";
  terminal.dataset.connected = "false";
});

const KEYS = {
  Enter: "\r", Backspace: "\x7f", Tab: "\t", Escape: "\x1b",
  ArrowUp: "\x1b[A", ArrowDown: "\x1b[B", ArrowRight: "\x1b[C", ArrowLeft: "\x1b[D",
  Home: "\x1b[H", End: "\x1b[F", Delete: "\x1b[3~",
};

function send(text) {
  if (socket.readyState === WebSocket.OPEN) socket.send(encoder.encode(text));
}

terminal.addEventListener("keydown", (event) => {
  let bytes = null;
  if (event.ctrlKey && !event.altKey && event.key.length === 1 && /[a-z@\[\]\\^_]/i.test(event.key)) {
    bytes = String.fromCharCode(event.key.toUpperCase().charCodeAt(0) & 0x1f);
  } else if (KEYS[event.key] !== undefined) {
    bytes = KEYS[event.key];
  } else if (event.key.length === 1 && !event.ctrlKey && !event.metaKey) {
    bytes = event.key;
  }
  if (bytes !== null) {
    event.preventDefault();
    send(bytes);
  }
});

document.getElementById("send-line").addEventListener("submit", (event) => {
  event.preventDefault();
  const input = document.getElementById("serial-line");
  send(input.value + "\r");
  input.value = "";
});
