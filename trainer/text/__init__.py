"""Text encoders: WordPiece (BERT), SentencePiece, GPT-1 and GPT-2 BPE, behind one contract."""
