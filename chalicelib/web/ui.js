// Small DOM helpers shared by the screens: element builder, the message area, sortable tables.

/** An element with attributes (`on*` functions become listeners) and children. */
export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === false || value === null || value === undefined) continue;
    if (name.startsWith("on") && typeof value === "function") {
      node.addEventListener(name.slice(2), value);
    } else if (name === "text") {
      node.textContent = value;
    } else {
      node.setAttribute(name, value === true ? "" : value);
    }
  }
  node.append(...children.flat().filter((child) => child !== null && child !== undefined));
  return node;
}

/** Show a failure (an ApiError's message, or any error) in the page's alert area. */
export function showError(error) {
  const box = document.getElementById("message");
  document.getElementById("message-text").textContent = error?.message || String(error);
  box.hidden = false;
  box.dataset.kind = "error";
}

export function clearMessage() {
  document.getElementById("message").hidden = true;
}

/** Run `work` with `button` disabled; any failure goes to the message area. */
export async function guarded(button, work) {
  if (button) button.disabled = true;
  try {
    return await work();
  } catch (error) {
    showError(error);
    return undefined;
  } finally {
    if (button) button.disabled = false;
  }
}

/**
 * Fill `table` with `rows`. Each column: {label, cell(row) → Node|string, sortKey(row)?}.
 * Columns with a sortKey get a header button that sorts the rows shown (aria-sort says how).
 */
export function renderTable(table, columns, rows, state = { column: -1, ascending: true }) {
  const sorted = [...rows];
  const active = columns[state.column];
  if (active?.sortKey) {
    sorted.sort((a, b) => {
      const x = active.sortKey(a);
      const y = active.sortKey(b);
      const order = typeof x === "number" && typeof y === "number" ? x - y : String(x).localeCompare(String(y));
      return state.ascending ? order : -order;
    });
  }
  const header = el(
    "tr",
    {},
    columns.map((column, index) => {
      if (!column.sortKey) return el("th", { scope: "col", text: column.label });
      const sort = index === state.column ? (state.ascending ? "ascending" : "descending") : "none";
      const button = el("button", {
        type: "button",
        class: "sort",
        text: column.label,
        onclick: () => {
          const ascending = index === state.column ? !state.ascending : true;
          renderTable(table, columns, rows, { column: index, ascending });
          table.querySelectorAll("th button")[index]?.focus();
        },
      });
      return el("th", { scope: "col", "aria-sort": sort }, button);
    }),
  );
  const body = sorted.map((row) => el("tr", {}, columns.map((column) => el("td", { "data-label": column.label }, column.cell(row)))));
  table.replaceChildren(el("thead", {}, header), el("tbody", {}, body));
  table.hidden = false;
}

/** A table of attributes (tag, keyword, VR, value) in a collapsible block. */
export function tagTable(title, rows) {
  const table = el(
    "table",
    { class: "tags", "aria-label": title },
    el("thead", {}, el("tr", {}, ["Tag", "Keyword", "VR", "Value"].map((label) => el("th", { scope: "col", text: label })))),
    el("tbody", {}, rows.map((cells) => el("tr", {}, cells.map((cell) => el("td", { text: cell }))))),
  );
  return el("details", { open: true, class: "tag-block" }, el("summary", { text: title }), el("div", { class: "table-wrap" }, table));
}

/** Save a Blob as a file through a temporary link. */
export function saveBlob(blob, name) {
  const url = URL.createObjectURL(blob);
  const link = el("a", { href: url, download: name, hidden: true });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}
