// 聊天页面：调用同一服务器的 /v1/chat/completions（stream=true），边收边显示。
// 对话保存在页面内存里（history）；停止按钮中止 fetch，服务器看到连接断开就停止这次生成。
"use strict";

const $ = (id) => document.getElementById(id);
const history = [];       // [{role, content}]，不含系统提示
let controller = null;    // 正在进行的请求的 AbortController

function setStatus(text, isError) {
  $("status").textContent = text;
  $("status").classList.toggle("error", !!isError);
}

function addMessage(role, text) {
  const div = document.createElement("div");
  div.className = "msg " + role;
  const who = document.createElement("div");
  who.className = "who";
  who.textContent = role === "user" ? "你" : "助手";
  const body = document.createElement("div");
  body.className = "body";
  body.innerHTML = renderMarkdown(text);  // renderMarkdown 先转义再排版
  div.append(who, body);
  $("messages").append(div);
  $("messages").scrollTop = $("messages").scrollHeight;
  return div;
}

function setBody(div, text) {
  div.querySelector(".body").innerHTML = renderMarkdown(text);
  $("messages").scrollTop = $("messages").scrollHeight;
}

async function loadModels() {
  try {
    const r = await fetch("/v1/models");
    const data = await r.json();
    $("model").innerHTML = "";
    for (const m of data.data) {
      const opt = document.createElement("option");
      opt.value = m.id;
      opt.textContent = m.id + "（上下文 " + m.context_length + "）";
      $("model").append(opt);
    }
    setStatus("就绪");
  } catch (e) {
    setStatus("无法获取模型列表：" + e, true);
  }
}

function numberOr(id, fallback) {
  const v = $(id).value.trim();
  return v === "" ? fallback : Number(v);
}

function buildRequest() {
  const messages = [];
  const system = $("system").value.trim();
  if (system) messages.push({ role: "system", content: system });
  messages.push(...history);
  const body = {
    model: $("model").value, messages, stream: true, stream_options: { include_usage: true },
    temperature: numberOr("temperature", 1), top_p: numberOr("top_p", 1), max_tokens: numberOr("max_tokens", 200),
  };
  const topK = numberOr("top_k", 0);
  if (topK > 0) body.top_k = topK;
  const seed = numberOr("seed", null);
  if (seed !== null) body.seed = seed;
  return body;
}

// 把收到的字节流切成 SSE 事件：事件之间是空行，每行 "data: ..."。
async function* sseEvents(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += decoder.decode(value, { stream: true });
    let k;
    while ((k = buf.indexOf("\n\n")) >= 0) {
      const event = buf.slice(0, k);
      buf = buf.slice(k + 2);
      const data = event.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trim()).join("\n");
      if (data) yield data;
    }
  }
}

function setBusy(busy) {
  $("send").disabled = busy;
  $("stop").disabled = !busy;
}

async function send(text) {
  history.push({ role: "user", content: text });
  addMessage("user", text);
  const div = addMessage("assistant", "");
  div.dataset.state = "streaming";
  let reply = "";
  controller = new AbortController();
  setBusy(true);
  setStatus("生成中…");
  const t0 = performance.now();
  let tFirst = null, usage = null;
  try {
    const r = await fetch("/v1/chat/completions", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify(buildRequest()), signal: controller.signal,
    });
    if (!r.ok) {
      const err = await r.json().catch(() => ({ error: { message: r.statusText } }));
      throw new Error(err.error ? err.error.message : r.statusText);
    }
    for await (const data of sseEvents(r)) {
      if (data === "[DONE]") break;
      const obj = JSON.parse(data);
      if (obj.error) throw new Error(obj.error.message);
      if (obj.usage) usage = obj.usage;
      const delta = obj.choices && obj.choices[0] ? obj.choices[0].delta.content : null;
      if (delta) {
        if (tFirst === null) tFirst = performance.now();
        reply += delta;
        setBody(div, reply);
      }
    }
    div.dataset.state = "done";
    const secs = (performance.now() - t0) / 1000;
    const n = usage ? usage.completion_tokens : 0;
    const first = tFirst === null ? "—" : ((tFirst - t0) / 1000).toFixed(2) + " 秒";
    setStatus(`完成：${n} 个词元，首词元 ${first}，${(n / secs).toFixed(1)} 词元/秒`);
  } catch (e) {
    if (e.name === "AbortError") {
      div.dataset.state = "stopped";
      setStatus("已停止");
    } else {
      div.dataset.state = "error";
      const p = document.createElement("div");
      p.className = "error";
      p.textContent = "出错：" + e.message;
      div.append(p);
      setStatus("出错", true);
    }
  } finally {
    history.push({ role: "assistant", content: reply });  // 停止时保留已生成的部分
    controller = null;
    setBusy(false);
  }
}

$("composer").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const text = $("input").value.trim();
  if (!text || controller) return;
  $("input").value = "";
  send(text);
});
$("input").addEventListener("keydown", (ev) => {
  if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) {
    ev.preventDefault();
    $("composer").requestSubmit();
  }
});
$("stop").addEventListener("click", () => { if (controller) controller.abort(); });
$("clear").addEventListener("click", () => {
  if (controller) controller.abort();
  history.length = 0;
  $("messages").innerHTML = "";
  setStatus("对话已清空");
});

loadModels();
