// 最小的安全 Markdown：先把 < > & " ' 全部转义，再在转义后的文字上识别少量语法。
// 因为转义在前，模型输出里的 <script>、<img onerror=…> 只会显示成文字，不会被浏览器执行。
// 支持：```代码块```、`行内代码`、**粗体**、*斜体*、# 标题、- 列表、换行。不生成链接（避免 javascript: 地址）。
"use strict";

function escapeHtml(text) {
  return text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;")
             .replace(/"/g, "&quot;").replace(/'/g, "&#39;");
}

function renderInline(s) {
  // s 已转义。行内代码先取出来，免得里面的 * 被当成强调。
  const codes = [];
  s = s.replace(/`([^`\n]+)`/g, (_, c) => { codes.push(c); return "\u0000" + (codes.length - 1) + "\u0000"; });
  s = s.replace(/\*\*([^*\n]+)\*\*/g, "<strong>$1</strong>");
  s = s.replace(/(^|[^*])\*([^*\n]+)\*/g, "$1<em>$2</em>");
  return s.replace(/\u0000(\d+)\u0000/g, (_, i) => "<code>" + codes[Number(i)] + "</code>");
}

function renderMarkdown(text) {
  const parts = escapeHtml(text).split(/```/);
  let html = "";
  parts.forEach((part, i) => {
    if (i % 2 === 1) {  // 代码块（最后一个未闭合的块在流式输出时也按代码显示）
      const nl = part.indexOf("\n");
      const lang = nl >= 0 ? part.slice(0, nl).trim() : "";
      const body = nl >= 0 ? part.slice(nl + 1) : part;
      const cls = /^[\w+-]+$/.test(lang) ? ' class="lang-' + lang + '"' : "";
      html += "<pre><code" + cls + ">" + body + "</code></pre>";
      return;
    }
    const lines = part.split("\n");
    let inList = false;
    lines.forEach((line, j) => {
      const h = /^(#{1,4}) (.*)$/.exec(line);
      const li = /^\s*[-*] (.*)$/.exec(line);
      if (li) {
        if (!inList) { html += "<ul>"; inList = true; }
        html += "<li>" + renderInline(li[1]) + "</li>";
        return;
      }
      if (inList) { html += "</ul>"; inList = false; }
      if (h) {
        const n = h[1].length + 2;  // # → h3，避免比页面标题还大
        html += "<h" + Math.min(n, 6) + ">" + renderInline(h[2]) + "</h" + Math.min(n, 6) + ">";
      } else {
        html += renderInline(line) + (j < lines.length - 1 ? "<br>" : "");
      }
    });
    if (inList) html += "</ul>";
  });
  return html;
}

if (typeof module !== "undefined") module.exports = { escapeHtml, renderMarkdown };
