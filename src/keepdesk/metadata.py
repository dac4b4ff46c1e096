"""Every model, imported in one place, so Alembic and the tests see the whole schema."""

from keepdesk import leases as leases_models
from keepdesk.accounts import models as accounts_models
from keepdesk.audit import models as audit_models
from keepdesk.backup import models as backup_models
from keepdesk.db import Base
from keepdesk.mail import models as mail_models
from keepdesk.outbox import models as outbox_models
from keepdesk.tickets import models as tickets_models

metadata = Base.metadata

__all__ = [
    "accounts_models",
    "audit_models",
    "backup_models",
    "leases_models",
    "mail_models",
    "metadata",
    "outbox_models",
    "tickets_models",
]
