"""Builds a tiny random Llama that vLLM can serve without any hub (run with the vLLM venv's Python).

Two layers, hidden size 128, head_dim 64, vocabulary 512, random weights from a fixed seed, and a BPE tokenizer
trained here with `tokenizers` on a fixed text: the same bytes every time, so two runs generate the same tokens.
Usage: vllm_tiny_model.py DIR (DIR must not exist; the caller renames it into place)."""
import os
import sys

os.environ["HF_HUB_OFFLINE"] = "1"

import torch  # noqa: E402
from tokenizers import Tokenizer, models, pre_tokenizers, trainers, decoders  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast  # noqa: E402

CORPUS = [
    "the kernel cache is a directory of compiled kernels",
    "a mount serves the cache from an image in a registry",
    "vllm compiles the model graph with inductor and saves the artifacts",
    "a warm start loads the compiled kernels instead of compiling them again",
] * 50


def main(out: str) -> None:
    torch.manual_seed(1234)
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=512, special_tokens=["<unk>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(CORPUS, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="<unk>", bos_token="<s>",
                                   eos_token="</s>")
    config = LlamaConfig(vocab_size=512, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, head_dim=64, max_position_embeddings=256,
                         bos_token_id=1, eos_token_id=2, torch_dtype="float32")
    model = LlamaForCausalLM(config)
    model.save_pretrained(out)
    fast.save_pretrained(out)


if __name__ == "__main__":
    main(sys.argv[1])
