"""SID tokenizers (phase 1 of every SID model), one small interface: ``Tokenizer(config, n_users, n_items)``,
``.fit(TokenizerInput, PhaseLog) -> TokenizerOutput``. ``TOKENIZERS`` maps each SID model to its tokenizer."""
from recbole_sid.tokenizers.base import PhaseLog, SideOutput, Tokenizer, TokenizerInput, TokenizerOutput
from recbole_sid.tokenizers.das import DASTokenizer
from recbole_sid.tokenizers.letter import LETTERTokenizer
from recbole_sid.tokenizers.qarm import QARMTokenizer
from recbole_sid.tokenizers.rqkmeans import RQKMeansTokenizer
from recbole_sid.tokenizers.rqvae import RQVAETokenizer

#: SID model name -> its tokenizer class (the model classes in ``recbole_sid.model`` use the same names)
TOKENIZERS = {
    "RQKMeans": RQKMeansTokenizer,
    "RQVAE": RQVAETokenizer,
    "LETTER": LETTERTokenizer,
    "QARM": QARMTokenizer,
    "DAS": DASTokenizer,
}

__all__ = ["TOKENIZERS", "DASTokenizer", "LETTERTokenizer", "PhaseLog", "QARMTokenizer", "RQKMeansTokenizer",
           "RQVAETokenizer", "SideOutput", "Tokenizer", "TokenizerInput", "TokenizerOutput"]
