// Files sent with a message: picked from the camera, the gallery or the files, made
// to fit (docs/protocol.md "Attachments"), shown in the conversation, and fetched again
// from the computer when the history replays them.

/// docs/protocol.md: at most this many files per input, each at most this many bytes.
export const MAX_FILES = 4;
const MAX_BYTES = 720 * 1024;
/// Photos are shrunk to this many pixels on their long side (what Claude looks at
/// anyway) and re-encoded as JPEG, so a 12-megapixel photo fits.
const LONG_SIDE = 1568;
const IMAGE_TYPES = ["image/png", "image/jpeg", "image/gif", "image/webp"];
/// Types the computer takes as documents, and what a name's extension means when the
/// phone gives no type (Android's file picker often does not for .md).
const DOCUMENT_TYPES = {
  "application/pdf": "pdf",
  "text/plain": "txt",
  "text/markdown": "md",
  "text/csv": "csv",
  "application/json": "json",
};
const BY_EXTENSION = {
  pdf: "application/pdf", txt: "text/plain", log: "text/plain", md: "text/markdown",
  markdown: "text/markdown", csv: "text/csv", json: "application/json",
};

/// What the file input accepts.
export const ACCEPT = [...IMAGE_TYPES, ...Object.keys(DOCUMENT_TYPES), ".md", ".csv", ".txt", ".json", ".log"].join(",");

/// A picked File → the attachment the protocol carries plus its bytes (for showing it
/// here), or a sentence saying why it cannot go.
export async function prepare(file) {
  let type = file.type;
  if (!IMAGE_TYPES.includes(type) && !(type in DOCUMENT_TYPES)) {
    type = BY_EXTENSION[file.name.split(".").pop().toLowerCase()] ?? type;
  }
  let bytes;
  if (IMAGE_TYPES.includes(type)) {
    if (file.size > MAX_BYTES) {
      bytes = await shrink(file);
      if (!bytes) return { error: `${file.name}: this picture could not be read.` };
      type = "image/jpeg";
    } else {
      bytes = new Uint8Array(await file.arrayBuffer());
    }
  } else if (type in DOCUMENT_TYPES) {
    bytes = new Uint8Array(await file.arrayBuffer());
  } else {
    return { error: `${file.name}: only pictures (PNG, JPEG, GIF, WebP), PDFs and text files can be sent.` };
  }
  if (bytes.length > MAX_BYTES) {
    return { error: `${file.name} is ${kib(bytes.length)}; a file may be at most ${kib(MAX_BYTES)}.` };
  }
  return {
    attachment: {
      type: IMAGE_TYPES.includes(type) ? "image" : "document",
      mediaType: type,
      data: toBase64(bytes),
      name: file.name,
    },
    bytes,
  };
}

/// Draws the picture at most LONG_SIDE pixels long and encodes it as JPEG, smaller
/// and smaller until it fits; null if the browser cannot decode it.
async function shrink(file) {
  let bitmap;
  try {
    bitmap = await createImageBitmap(file);
  } catch {
    return null;
  }
  let scale = Math.min(1, LONG_SIDE / Math.max(bitmap.width, bitmap.height));
  const canvas = document.createElement("canvas");
  try {
    for (let tries = 0; tries < 8; tries++) {
      canvas.width = Math.max(1, Math.round(bitmap.width * scale));
      canvas.height = Math.max(1, Math.round(bitmap.height * scale));
      canvas.getContext("2d").drawImage(bitmap, 0, 0, canvas.width, canvas.height);
      const blob = await new Promise((done) => canvas.toBlob(done, "image/jpeg", tries ? 0.7 : 0.85));
      if (blob && blob.size <= MAX_BYTES) return new Uint8Array(await blob.arrayBuffer());
      if (tries) scale *= 0.7;
    }
    return null;
  } finally {
    bitmap.close();
  }
}

function kib(n) {
  return `${Math.ceil(n / 1024).toLocaleString()} KiB`;
}

export function toBase64(bytes) {
  let text = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    text += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(text);
}

function fromBase64(text) {
  return Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
}

/// The files of one message, under its text: pictures as thumbnails, the rest by name.
/// `files` are [{name, mediaType, bytes?, id?}]: with bytes they are drawn at once,
/// with only an id (a replayed message) `fetch(id)` is asked for them.
export function show(into, files, fetch) {
  const list = document.createElement("div");
  list.className = "files";
  for (const f of files) {
    if (IMAGE_TYPES.includes(f.mediaType)) {
      const img = document.createElement("img");
      img.alt = f.name;
      img.dataset.attachment = f.id ?? "";
      if (f.bytes) draw(img, f.bytes, f.mediaType);
      else if (f.id) {
        waiting.set(f.id, img);
        fetch(f.id);
      }
      list.append(img);
    } else {
      const chip = document.createElement("span");
      chip.className = "file";
      chip.textContent = `📄 ${f.name}`;
      list.append(chip);
    }
  }
  into.append(list);
}

/// Replayed pictures waiting for their bytes, by attachment id.
const waiting = new Map();

function draw(img, bytes, mediaType) {
  const url = URL.createObjectURL(new Blob([bytes], { type: mediaType }));
  img.addEventListener("load", () => URL.revokeObjectURL(url), { once: true });
  img.src = url;
}

/// An `attachment` frame: the bytes of a picture a replayed message listed.
export function arrived(msg) {
  const img = waiting.get(msg.attachmentId);
  if (!img) return;
  waiting.delete(msg.attachmentId);
  if (IMAGE_TYPES.includes(msg.mediaType)) draw(img, fromBase64(msg.data ?? ""), msg.mediaType);
}

/// The computer no longer keeps it: say so where the picture would be.
export function gone(id) {
  const img = waiting.get(id);
  if (!img) return false;
  waiting.delete(id);
  const note = document.createElement("span");
  note.className = "file gone";
  note.textContent = `🖼 ${img.alt} (no longer kept on the computer)`;
  img.replaceWith(note);
  return true;
}

/// Forgets pictures still waiting (the conversation was cleared).
export function clear() {
  waiting.clear();
}
