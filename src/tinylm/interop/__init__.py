"""Interoperability: tinylm models in and out of other ecosystems.

family.py      a model family's adapter interface, and the list of families export tries
gpt2.py        family gpt2: tinylm <-> transformers GPT2LMHeadModel (config, weight names)
llama.py       families llama and qwen3: RoPE + RMSNorm + SwiGLU <-> LlamaForCausalLM,
               with QK-norm <-> Qwen3ForCausalLM
hf.py          `tinylm export --format hf` and `tinylm import`: whole model directories
tokenizer.py   tinylm tokenizers -> Hugging Face tokenizer files, and back to a name
model_card.py  the README.md of an export, written from the run directory
pt2.py         `tinylm export --format pt2`: a torch.export program for inference elsewhere
"""
