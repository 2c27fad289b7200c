"""Token classification (the seed's token-level task, e.g. POS or NER tags): a label per word, read on its
first sub-word; dropout and a linear classifier at every position. BIO tags are scored by CoNLL span F1."""

from __future__ import annotations

from trainer import features
from trainer.tasks.base import ClassificationTask, HeadContext, _labelled
from trainer.tasks.baselines import lookup_predictions
from trainer.tasks.metrics import is_bio, macro_f1, span_f1


WORD_STARTS = "word_starts"  # packed rows only (not a record feature): each word's first sub-word position


class TokenClassification(ClassificationTask):
    kind = "token"
    has_label_names = True
    has_examples = True
    input_formats = ("conll",)  # a word and its tag per line

    def pack(self, start: int, end: int, word_pieces: list[list[int]], labels: list[int],
             max_seq_length: int) -> tuple[dict, bool]:
        """``[start] pieces... [end]``: each word's label on its first sub-word (weight 1), 0 elsewhere; words
        with no pieces are skipped and words that do not fit are dropped; -> (record row, whether truncated).
        The row also says where each word starts (``word_starts``, not written to records)."""
        ids, row_labels, weights = [start], [0], [0.0]
        truncated = False
        firsts = [None] * len(word_pieces)  # each word's first sub-word (None: no pieces, or cut off)
        for word, (label, pieces) in enumerate(zip(labels, word_pieces)):
            if not pieces:
                continue
            if len(ids) + len(pieces) > max_seq_length - 1:
                truncated = True
                break
            firsts[word] = len(ids)
            ids.extend(pieces)
            row_labels.extend([label] + [0] * (len(pieces) - 1))
            weights.extend([1.0] + [0.0] * (len(pieces) - 1))
        ids.append(end)
        return {features.INPUT_IDS: ids, features.SEGMENT_IDS: [0] * len(ids), self.labels_key(): row_labels + [0],
                self.weights_key(): weights + [0.0], WORD_STARTS: firsts}, truncated

    def example(self, text, label, text_b=None) -> tuple:
        if isinstance(text, str) or isinstance(label, str) or text_b is not None:
            raise ValueError("must be a list of words with a list of tags")
        words, tags = list(text), list(label)
        if len(words) != len(tags):
            raise ValueError(f"{len(words)} words but {len(tags)} tags")
        return words, tags

    def example_labels(self, example) -> list:
        return list(example[1])

    def unlabelled(self, text, text_b=None) -> tuple:
        if text_b is not None:
            raise ValueError(f"{self.name}: a token task tags one text, not pairs")
        words = text.split()
        return words, [None] * len(words)

    def pack_examples(self, encoder, examples, label_ids, max_seq_length):
        start, end = encoder.special.id("start"), encoder.special.id("end")
        words = [w for sentence, _ in examples for w in sentence]
        pieces = encoder.encode_batch(words) if words else []
        position = 0
        for index, (sentence, tags) in enumerate(examples):
            sentence_pieces = pieces[position : position + len(sentence)]
            position += len(sentence)
            unknown = [tag for tag in tags if tag not in label_ids]
            if len(tags) != len(sentence):
                yield index, f"{len(sentence)} words but {len(tags)} tags", False
            elif unknown:
                yield index, f"tag {unknown[0]!r} is not in the label vocabulary", False
            else:
                row, truncated = self.pack(start, end, [list(p) for p in sentence_pieces],
                                           [label_ids[t] for t in tags], max_seq_length)
                yield index, row, truncated

    def answer(self, probabilities, row, example, token_text) -> dict:
        """A tag per word (read on its first sub-word, as trained; None for a word without pieces or cut off
        by the length) and per sub-word."""
        names = self.label_names or [str(i) for i in range(self.num_classes)]
        tags = [names[int(i)] for i in probabilities.argmax(-1)]
        return {self.name: [(word, None if i is None else tags[i]) for word, i in zip(example[0], row[WORD_STARTS])],
                f"{self.name}_subwords": [(token_text(t), tags[i]) for i, t in enumerate(row[features.INPUT_IDS])]}

    def record_features(self, layout) -> dict[str, int]:
        return {self.labels_key(): layout.seq_length, self.weights_key(): layout.seq_length}

    def position_features(self) -> tuple[str, ...]:
        return self.labels_key(), self.weights_key()

    def parse(self, record, example, source, layout) -> None:
        import tensorflow as tf  # noqa: PLC0415

        n = layout.seq_length
        present = self.labels_key() in record
        example[self.labels_key()] = record[self.labels_key()] if present else tf.zeros([n], tf.int32)
        example[self.weights_key()] = record[self.weights_key()] if present else tf.zeros([n], tf.float32)

    def synthetic(self, draws, layout, vocab_size: int) -> dict:
        import tensorflow as tf  # noqa: PLC0415

        n = layout.seq_length
        return {self.labels_key(): draws.ints([n], self.num_classes), self.weights_key(): tf.ones([n])}

    def head(self, context: HeadContext, inputs):
        import keras  # noqa: PLC0415

        from trainer.model.layers import Dropout, initializer  # noqa: PLC0415

        init = initializer(getattr(context.backbone, "initializer_range", 0.02))
        h = Dropout(self.config.dropout, name=f"{self.name}_dropout")(context.sequence_output(self))
        return keras.layers.Dense(self.num_classes, kernel_initializer=init, name=self.name)(h)

    def metrics(self, predictions, gold, weight, ce) -> dict:
        out = super().metrics(predictions, gold, weight, ce)
        if not out.get("weight"):
            return out
        keep = weight > 0
        names = self.label_names
        if is_bio(names):
            gold_tags = [[names[t] for t, k in zip(g, m) if k] for g, m in zip(gold, keep)]
            pred_tags = [[names[t] if t < len(names) else "O" for t, k in zip(p, m) if k] for p, m in zip(predictions, keep)]
            out.update(span_f1(gold_tags, pred_tags))
        else:
            out["macro_f1"] = macro_f1(gold[keep], predictions[keep], self.num_classes)
        return out

    def baseline(self, train, evaluation) -> dict:
        """Each word's most frequent training label (``baseline_*``)."""
        train, evaluation = (_labelled(arrays, self.weights_key()) for arrays in (train, evaluation))
        if not len(train[self.labels_key()]) or not len(evaluation[self.labels_key()]):
            return {}
        predictions = lookup_predictions(train, train[self.labels_key()], train[self.weights_key()], evaluation,
                                         evaluation[self.weights_key()])
        return self.baseline_metrics("per-word lookup of training labels", predictions, evaluation)
