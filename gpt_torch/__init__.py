"""gpt_torch：同一个 GPT 的 PyTorch 实现（模型、注意力、KV 缓存、DDP、训练后端），参数名与检查点与 gpt_numpy 完全一致。

共用层在 llmcore；本包不导入 tinytensor、numba 或 gpt_numpy。
"""
