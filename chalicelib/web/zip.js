// A WADO-RS multipart/related answer (RFC 2387) turned into a zip of its DICOM files: stored,
// not compressed (APPNOTE 6.3.10 §4.3; DICOM pixel data rarely shrinks), one file per part named
// by the SOP Instance UID at the end of its Content-Location.

const encoder = new TextEncoder();
const decoder = new TextDecoder();

function indexOf(bytes, pattern, from) {
  outer: for (let i = from; i <= bytes.length - pattern.length; i++) {
    for (let j = 0; j < pattern.length; j++) if (bytes[i + j] !== pattern[j]) continue outer;
    return i;
  }
  return -1;
}

/** The parts of a multipart body: [{headers: {lower-case name: value}, body: Uint8Array}]. */
function splitMultipart(bytes, boundary) {
  const delimiter = encoder.encode(`--${boundary}`);
  const parts = [];
  let start = indexOf(bytes, delimiter, 0);
  while (start >= 0) {
    let cursor = start + delimiter.length;
    if (bytes[cursor] === 45 && bytes[cursor + 1] === 45) break; // "--": the closing delimiter
    cursor += 2; // CRLF after the delimiter
    const next = indexOf(bytes, encoder.encode(`\r\n--${boundary}`), cursor);
    if (next < 0) throw new Error("the multipart answer is truncated (no closing boundary)");
    const headerEnd = indexOf(bytes, encoder.encode("\r\n\r\n"), cursor);
    const headers = {};
    for (const line of decoder.decode(bytes.subarray(cursor, headerEnd)).split("\r\n")) {
      const colon = line.indexOf(":");
      if (colon > 0) headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
    }
    parts.push({ headers, body: bytes.subarray(headerEnd + 4, next) });
    start = next + 2;
  }
  return parts;
}

const CRC_TABLE = Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});

function crc32(bytes) {
  let crc = 0xffffffff;
  for (let i = 0; i < bytes.length; i++) crc = CRC_TABLE[(crc ^ bytes[i]) & 0xff] ^ (crc >>> 8);
  return (crc ^ 0xffffffff) >>> 0;
}

function header(size, fields) {
  const view = new DataView(new ArrayBuffer(size));
  for (const [offset, bytes, value] of fields) {
    if (bytes === 4) view.setUint32(offset, value, true);
    else view.setUint16(offset, value, true);
  }
  return new Uint8Array(view.buffer);
}

/** A zip (stored entries) of [{name, body}]. */
function zipFiles(files) {
  const chunks = [];
  const central = [];
  let offset = 0;
  for (const { name, body } of files) {
    const nameBytes = encoder.encode(name);
    const crc = crc32(body);
    const local = header(30, [[0, 4, 0x04034b50], [4, 2, 20], [6, 2, 0x0800], [14, 4, crc], [18, 4, body.length], [22, 4, body.length], [26, 2, nameBytes.length]]);
    chunks.push(local, nameBytes, body);
    central.push(header(46, [[0, 4, 0x02014b50], [4, 2, 20], [6, 2, 20], [8, 2, 0x0800], [16, 4, crc], [20, 4, body.length], [24, 4, body.length], [28, 2, nameBytes.length], [42, 4, offset]]), nameBytes);
    offset += local.length + nameBytes.length + body.length;
  }
  const centralSize = central.reduce((sum, chunk) => sum + chunk.length, 0);
  const end = header(22, [[0, 4, 0x06054b50], [8, 2, files.length], [10, 2, files.length], [12, 4, centralSize], [16, 4, offset]]);
  return new Blob([...chunks, ...central, end], { type: "application/zip" });
}

/** {blob, count}: the zip of a WADO-RS multipart/related answer's instances. */
export async function zipFromMultipart(response) {
  const type = response.headers.get("Content-Type") || "";
  const boundary = /boundary="?([^";]+)"?/i.exec(type)?.[1];
  if (!boundary) throw new Error(`the study answer is not multipart (Content-Type ${type || "none"})`);
  const parts = splitMultipart(new Uint8Array(await response.arrayBuffer()), boundary);
  const files = parts.map((part, index) => {
    const location = part.headers["content-location"] || "";
    const uid = location.split("/").filter(Boolean).pop() || `instance-${index + 1}`;
    return { name: `${uid}.dcm`, body: part.body };
  });
  return { blob: zipFiles(files), count: files.length };
}
