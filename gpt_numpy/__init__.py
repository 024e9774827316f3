"""gpt_numpy：建立在 tinytensor 之上的 GPT（分词器、数据、模型、训练循环）。

与框架无关的部分（配置、分词器、数据集、检查点）在导入时不得导入 tinytensor 或 numba，
这样 gpt_torch 可以直接复用它们。
"""
