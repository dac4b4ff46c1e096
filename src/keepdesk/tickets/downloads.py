"""Serving an attachment: always as a download, never interpreted by the browser (AC-20).

The REST API and the ticket page both answer through `attachment_response`, after their own
access check has loaded the attachment.
"""

from __future__ import annotations

from fastapi.responses import FileResponse

from keepdesk.blobs import BlobStore
from keepdesk.errors import NotFound
from keepdesk.tickets.filenames import content_disposition
from keepdesk.tickets.models import Attachment

# Served as downloads in any case; these are never worth a browser's interpretation at all.
_ACTIVE_TYPES = (
    "text/html",
    "image/svg+xml",
    "application/xhtml+xml",
    "text/xml",
    "application/xml",
    "text/javascript",
    "application/javascript",
)


def attachment_response(blobs: BlobStore, attachment: Attachment) -> FileResponse:
    path = blobs.path_for(attachment.blob_key)
    if not path.is_file():
        raise NotFound("the attachment's file is missing from the blob store", code="blob_missing")
    media_type = attachment.content_type
    if media_type.startswith(_ACTIVE_TYPES) or media_type.endswith("+xml"):
        media_type = "application/octet-stream"
    return FileResponse(
        path,
        media_type=media_type,
        headers={
            "Content-Disposition": content_disposition(attachment.filename),
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "sandbox; default-src 'none'",
            "Cache-Control": "private, no-store",
        },
    )
