"""Celery entry points of the participants' mail: thin, by id."""

from celery import shared_task

from notifications.services import mail_send, mail_sweep


@shared_task(bind=True, max_retries=None, ignore_result=True)
def mail_send_task(self, mail_id: int) -> None:
    retry_in = mail_send(mail_id=mail_id)
    if retry_in is not None:
        raise self.retry(countdown=retry_in)


@shared_task(ignore_result=True)
def mail_sweep_task() -> dict[str, int]:
    return mail_sweep()
