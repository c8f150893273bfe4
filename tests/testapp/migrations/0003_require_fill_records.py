from django.db import migrations

from backfills.operations import RequireBackfill


class Migration(migrations.Migration):
    """A schema migration that may only run once testapp.fill_records has completed."""

    dependencies = [("testapp", "0002_record")]

    operations = [RequireBackfill("testapp.fill_records")]
