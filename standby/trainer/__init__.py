"""LoRA fine-tuning of the fallback Gemma: TRL's SFTTrainer + peft on rows in the no_robots
schema (pair store, local dataset or Hub id), producing an adapter folder with its
``standby-model.json`` that the gateway's local backend, vLLM or TGI can serve.

Modules: ``config`` (settings = YAML = flags), ``data`` (rows -> chats, formatted as at
inference), ``model`` (base model, device, precision, load errors), ``train`` (the run),
``metadata`` (what the model card records), ``publish`` (Hub push, ``training.completed``), ``cli``.
"""
