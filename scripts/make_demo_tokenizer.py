#!/usr/bin/env python3
"""The demo model's tokenizer (run by hand; its output recipes/demo/tokenizer.json is committed).

    python3 scripts/make_demo_tokenizer.py TRAIN.jsonl

A 512-token byte-level BPE trained on the arithmetic task's training text, digits split one by
one (Digits + ByteLevel, like SmolLM2), <|endoftext|> = 0 added as BOS and EOS by the
post-processor, so the model learns where an answer ends.
"""
import json, os, sys
from tokenizers import Tokenizer, models, pre_tokenizers, decoders, trainers, processors

out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "recipes", "demo", "tokenizer.json")
texts = []
with open(sys.argv[1]) as f:
    for line in f:
        d = json.loads(line)
        texts.append(f"Question: {d['question']}\nAnswer: {d['answer']}")
tok = Tokenizer(models.BPE())
tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                             pre_tokenizers.ByteLevel(add_prefix_space=False)])
tok.decoder = decoders.ByteLevel()
trainer = trainers.BpeTrainer(vocab_size=512, special_tokens=["<|endoftext|>"],
                              initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
tok.train_from_iterator(texts, trainer=trainer)
tok.post_processor = processors.TemplateProcessing(single="<|endoftext|> $A <|endoftext|>",
                                                   special_tokens=[("<|endoftext|>", 0)])
tok.save(out)
lengths = [len(tok.encode(t).ids) for t in texts[:2000]]
print(f"wrote {out}: {tok.get_vocab_size()} tokens, mean {sum(lengths) / len(lengths):.1f} / max {max(lengths)} tokens a problem")
