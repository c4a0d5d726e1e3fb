// A reader of /openapi.json with nothing from elsewhere: each operation, its permission, its
// parameters, its request body and its answers, with their schemas shown as JSON.
"use strict";

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
  for (const child of children) node.append(child);
  return node;
}

function resolve(doc, schema) {
  if (schema && schema.$ref) {
    const name = schema.$ref.split("/").pop();
    return doc.components.schemas[name] || schema;
  }
  return schema;
}

function schemaBlock(doc, title, schema) {
  const text = JSON.stringify(resolve(doc, schema), null, 2);
  return el("details", {}, el("summary", {}, title), el("pre", {}, text));
}

function operation(doc, path, method, op) {
  const id = `${method}-${path}`.replace(/[^A-Za-z0-9]+/g, "-");
  const section = el("section", { class: "op", id });
  section.append(el("h2", {}, el("span", { class: "method" }, method), " ", el("span", { class: "path" }, path)));
  if (op.summary) section.append(el("p", {}, op.summary));
  for (const line of (op.description || "").split("\n\n")) {
    if (line) section.append(el("p", line.startsWith("Requires") || line.startsWith("Public") || line.startsWith("Needs") ? { class: "perm" } : {}, line));
  }
  const parameters = op.parameters || [];
  if (parameters.length) {
    const table = el("table", {}, el("tr", {}, el("th", {}, "parameter"), el("th", {}, "in"), el("th", {}, "schema")));
    for (const p of parameters) {
      table.append(el("tr", {}, el("td", {}, p.name + (p.required ? " *" : "")), el("td", {}, p.in), el("td", {}, el("code", {}, JSON.stringify(p.schema)))));
    }
    section.append(table);
  }
  if (op.requestBody) {
    for (const [type, media] of Object.entries(op.requestBody.content || {})) {
      section.append(schemaBlock(doc, `request body (${type}${op.requestBody.required ? ", required" : ""})`, media.schema));
    }
  }
  const answers = el("table", {}, el("tr", {}, el("th", {}, "status"), el("th", {}, "meaning"), el("th", {}, "body")));
  for (const [status, response] of Object.entries(op.responses || {})) {
    const bodies = el("td", {});
    for (const [type, media] of Object.entries(response.content || {})) {
      bodies.append(schemaBlock(doc, type, media.schema));
    }
    answers.append(el("tr", {}, el("td", {}, status), el("td", {}, response.description || ""), bodies));
  }
  section.append(answers);
  return [id, section];
}

async function main() {
  const main = document.getElementById("operations");
  const response = await fetch("/openapi.json");
  const doc = await response.json();
  document.getElementById("about").textContent = `${doc.info.description || ""} (version ${doc.info.version})`;
  main.textContent = "";
  const toc = document.getElementById("toc");
  for (const [path, operations] of Object.entries(doc.paths).sort()) {
    for (const [method, op] of Object.entries(operations)) {
      const [id, section] = operation(doc, path, method, op);
      main.append(section);
      toc.append(el("a", { href: `#${id}` }, `${method.toUpperCase()} ${path}`));
    }
  }
}

main().catch((error) => {
  document.getElementById("operations").textContent = `Could not load /openapi.json: ${error}`;
});
