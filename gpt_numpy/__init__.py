"""gpt_numpy：建立在 tinytensor 上的 GPT（模型、注意力、KV 缓存、生成、训练后端）。

与框架无关的部分（配置、分词器、数据、训练循环、检查点、命令行）在 llmcore；本包不导入 torch，
gpt_torch 也不导入本包。
"""
