"""gpt_torch：同一个 GPT 的 PyTorch 实现，参数名与检查点与 gpt_numpy 完全一致。"""
