"""Interoperability: tinylm models in and out of other ecosystems.

gpt2.py        tinylm <-> GPT-2 (transformers GPT2LMHeadModel): config and weight names
hf.py          `tinylm export --format hf` and `tinylm import`: whole model directories
tokenizer.py   tinylm tokenizers -> Hugging Face tokenizer files, and back to a name
model_card.py  the README.md of an export, written from the run directory
pt2.py         `tinylm export --format pt2`: a torch.export program for inference elsewhere
"""
