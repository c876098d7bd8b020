"""The data pipeline's public face: raw formats -> jsonl, the tokenizer, the fine-tuning dataset.

The work is split by job: :mod:`nola.train.formats` (raw files -> formatted jsonl), :mod:`nola.gpt2.tokenizer`
(GPT-2 BPE and encoding), :mod:`nola.gpt2.dataset` (tensors and sharded loaders), :mod:`nola.train.download`
(fetching raw files, vocabulary and checkpoints). Import from here.
"""
from nola.gpt2.dataset import FTDataset, make_loader, read_encoded, trim_collate
from nola.train.formats import WEBNLG_SEEN_CATEGORIES, convert, read_formatted
from nola.gpt2.tokenizer import EOS_ID, encode_file, encode_records, load_reference_tokenizer, load_tokenizer

__all__ = [
    "EOS_ID",
    "FTDataset",
    "WEBNLG_SEEN_CATEGORIES",
    "convert",
    "encode_file",
    "encode_records",
    "load_reference_tokenizer",
    "load_tokenizer",
    "make_loader",
    "read_encoded",
    "read_formatted",
    "trim_collate",
]
