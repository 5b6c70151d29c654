"""The IOC feed example: one Adversary (the feed), one Incident associated with it, and the
feed's host indicators, tagged and associated with both, sent in one v2 batch."""
import hashlib
import time


class App:
    def __init__(self, tcex):
        self.tcex = tcex
        self.exit_code = 0
        self.exit_message = 'Success'

    def run(self) -> None:
        inputs = self.tcex.inputs.contents_resolved
        log = self.tcex.log
        # As the platform's templates do: every input in the log (tcex masks only what its own
        # model marks sensitive; soarjobd redacts the `encrypt` params from the stored log).
        log.info(f'inputs: {inputs}')
        key = inputs['feed_key']
        log.info(f'feed key sha256={hashlib.sha256(key.encode()).hexdigest()}')

        mode = inputs.get('mode') or 'normal'
        if mode == 'raise':
            raise RuntimeError('the feed is unreachable')
        if mode == 'hang':
            time.sleep(3600)

        owner = inputs['tc_owner']
        feed = inputs['feed_name']
        hosts = inputs['indicators']
        if isinstance(hosts, str):
            hosts = [hosts]
        tags = inputs.get('tags') or []
        if isinstance(tags, str):
            tags = [tags]

        batch = self.tcex.v2.batch(owner, halt_on_error=False, attribute_write_type='Append')
        adversary = batch.adversary(feed, xid=batch.generate_xid(['ioc-feed', 'adversary', feed]))
        incident = batch.incident(
            f'{feed} sighting',
            xid=batch.generate_xid(['ioc-feed', 'incident', feed]),
            status='New',
            event_date='2026-12-01T00:00:00Z',
        )
        incident.association(adversary.xid)
        for host in hosts:
            indicator = batch.host(host, rating=3, confidence=60)
            for tag in tags:
                indicator.tag(tag)
            indicator.association(adversary.xid)
            indicator.association(incident.xid)
        results = batch.submit_all(poll=True, errors=True)
        errors = sum(r.get('errorCount', 0) for r in results)
        log.info(f'batch results: {results}')
        sent = len(hosts) + 2
        if errors:
            self.exit_code = 3
            self.exit_message = f'{errors} of {sent} items were rejected by ThreatConnect'
        else:
            self.exit_message = f'Sent {len(hosts)} indicators and 2 groups to {owner}'
