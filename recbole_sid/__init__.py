"""recbole-sid: semantic-ID recommendation models (DAS, COINS, SID tokenizers) as a RecBole plugin.

``import recbole_sid`` installs the compatibility shims (``recbole_sid.compat``) and makes the plugin's models
resolvable by name through ``recbole_sid.get_model`` / ``recbole_sid.config.Config`` / ``run_recbole``, and through
RecBole's own ``recbole.utils.get_model`` / ``recbole.config.Config`` (``recbole_sid.utils.register_with_recbole``).
"""
from recbole_sid import compat as _compat

_compat.apply()

from recbole_sid.exceptions import (  # noqa: E402
    ConfigError,
    DataError,
    DatasetNotFoundError,
    ModelNotFoundError,
    PluginError,
    QuantizationError,
    RecBoleSIDError,
)
from recbole_sid.utils import (  # noqa: E402
    available_models,
    get_model,
    get_trainer,
    import_plugins,
    plugins_from_env,
    properties_dir,
    register_model,
    register_with_recbole,
)

register_with_recbole()

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "DataError",
    "DatasetNotFoundError",
    "ModelNotFoundError",
    "PluginError",
    "QuantizationError",
    "RecBoleSIDError",
    "available_models",
    "get_model",
    "get_trainer",
    "import_plugins",
    "plugins_from_env",
    "properties_dir",
    "register_model",
    "__version__",
]
