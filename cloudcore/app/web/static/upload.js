// The templates page's upload: the file's sha256 (Web Crypto), then the file itself as the body
// of PUT /ui/templates/{id}/image?size=&sha256=, with the session's CSRF token in a header. The
// server streams it into the image library as the API's upload does; the outcome is shown in
// the page's live region.
const form = document.getElementById("upload");
const status = document.getElementById("upload-status");
const progress = document.getElementById("upload-progress");

function hex(buffer) {
  return Array.from(new Uint8Array(buffer), (b) => b.toString(16).padStart(2, "0")).join("");
}

function send(url, file) {
  return new Promise((resolve, reject) => {
    const request = new XMLHttpRequest();
    request.open("PUT", url);
    request.setRequestHeader("X-CSRF-Token", form.dataset.csrf);
    request.setRequestHeader("HX-Request", "true");
    request.setRequestHeader("Content-Type", "application/octet-stream");
    request.upload.addEventListener("progress", (e) => {
      if (e.lengthComputable) progress.value = e.loaded / e.total;
    });
    request.addEventListener("load", () => resolve(request));
    request.addEventListener("error", () => reject(new Error("the connection failed")));
    request.send(file);
  });
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const file = document.getElementById("upload-file").files[0];
  const template = document.getElementById("upload-template").value;
  if (!file || !template) {
    status.textContent = "Choose a template and an image file.";
    return;
  }
  if (!window.crypto || !window.crypto.subtle) {
    status.textContent = "This browser cannot hash the file here (Web Crypto needs HTTPS or localhost): use cloudcore template upload.";
    return;
  }
  status.textContent = `Hashing ${file.name}…`;
  progress.value = 0;
  const sha256 = hex(await crypto.subtle.digest("SHA-256", await file.arrayBuffer()));
  status.textContent = `Uploading ${file.name}…`;
  const query = new URLSearchParams({ size: String(file.size), sha256 });
  try {
    const reply = await send(`/ui/templates/${encodeURIComponent(template)}/image?${query}`, file);
    const flash = document.getElementById("flash");
    flash.innerHTML = reply.responseText;  // the server's own fragment (escaped by Jinja2)
    status.textContent = flash.textContent.trim();
    progress.value = 1;
    document.body.dispatchEvent(new Event("uploaded"));
  } catch (error) {
    status.textContent = `The upload failed: ${error.message}`;
  }
});
