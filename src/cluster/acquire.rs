//! Acquire: one script call decides; a denied caller with time left waits in this
//! replica's queue for the bucket (a turnstile) until a release or feedback anywhere
//! wakes it, or the script's ready time passes.

#[allow(clippy::wildcard_imports)]
use super::*;

/// What one acquire script said.
pub(super) enum Try {
    Granted {
        expires_us: u64,
        remaining: Vec<(usize, u64)>,
    },
    Denied {
        reason: DenialReason,
        wait: Duration,
        remaining: Vec<(usize, u64)>,
    },
    Never,
    /// A new partition past the cap.
    Full {
        limit: usize,
        live: usize,
    },
}

impl Cluster {
    async fn try_acquire(
        &self,
        def: &ResourceDef,
        keys: &BucketKeys,
        partition: &str,
        cost: &[u64],
        lease: Duration,
        member: &str,
    ) -> Result<Try, ClusterError> {
        let mut args = Vec::with_capacity(16);
        slot_args(def, def.per_partition, &mut args);
        args.push(cost.len().to_string());
        args.extend(cost.iter().map(u64::to_string));
        args.push(if def.concurrency > 0 {
            def.concurrency.to_string()
        } else {
            "0".to_owned()
        });
        args.push(
            u64::try_from(lease.as_micros())
                .unwrap_or(u64::MAX)
                .to_string(),
        );
        args.push(member.to_owned());
        args.push(ttl_ms(def).to_string());
        args.push(self.channel.clone());
        args.push(Self::event('g', &def.name, partition));
        let cap = if def.per_partition {
            self.registry
                .caps()
                .partitions(crate::auth::tenant::split(&def.name).0)
        } else {
            0
        };
        args.push(cap.to_string());
        let v: Vec<i64> = self
            .script(&self.scripts.acquire, "acquire", keys, &args)
            .await?;
        let (Some(&code), Some(&second)) = (v.first(), v.get(1)) else {
            return Err(ClusterError::Reply { op: "acquire" });
        };
        let remaining = pairs(v.get(3..).unwrap_or(&[]));
        Ok(match code {
            0 => Try::Granted {
                expires_us: u64::try_from(second).unwrap_or(0),
                remaining,
            },
            1..=3 => Try::Denied {
                reason: match code {
                    1 => DenialReason::RateLimited,
                    2 => DenialReason::ConcurrencyLimited,
                    _ => DenialReason::Cooldown,
                },
                wait: us(second),
                remaining,
            },
            4 => Try::Never,
            5 => Try::Full {
                limit: cap,
                live: usize::try_from(second).unwrap_or(0),
            },
            _ => return Err(ClusterError::Reply { op: "acquire" }),
        })
    }

    /// Grant, queue or deny a permit against the shared state.
    pub async fn acquire(&self, req: AcquireRequest<'_>) -> Result<AcquireOutcome, PermitError> {
        let def = self.registry.definition(req.resource)?;
        let cost = resolve_cost(&def, req.cost)?;
        if def
            .limits
            .iter()
            .any(|l| cost.get(l.dimension).is_some_and(|&c| c > l.rate.burst))
        {
            return Err(never(&def, &cost));
        }
        if !self.is_up() {
            return self.unreachable(&def, req, ClusterError::Down).await;
        }
        let start = tokio::time::Instant::now();
        let deadline = start + req.max_wait;
        let keys = self.keys(&def, req.partition);
        let lease = req.lease.unwrap_or(def.lease);
        let notify = self.notify(req.resource);
        // The head of this replica's queue holds the turnstile's lock (and so one reference:
        // the map's aside, each reference is one queued caller, which GetQuota counts).
        let mut turn: Option<tokio::sync::OwnedMutexGuard<()>> = None;
        // This caller's place under the waiter caps once it queues.
        let mut waiting = None;
        loop {
            // Armed before the script runs, so a release published meanwhile is not missed.
            let notified = notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let (seq, tag) = (
                fastrand::u64(..) | CLUSTER_SEQ,
                crate::permits::id::random_tag(),
            );
            let member = format!("{seq:x}.{tag:x}");
            let tried = self
                .try_acquire(&def, &keys, req.partition, &cost, lease, &member)
                .await;
            let tried = match tried {
                Ok(t) => t,
                Err(e) => {
                    drop(turn);
                    self.forget_turnstile(&keys.home);
                    return self.unreachable(&def, req, e).await;
                }
            };
            let now = tokio::time::Instant::now();
            let waited = now.duration_since(start);
            match tried {
                Try::Granted {
                    expires_us,
                    remaining,
                } => {
                    drop(turn);
                    self.forget_turnstile(&keys.home);
                    self.registry.count(
                        req.resource,
                        Ok((waited > Duration::ZERO).then_some(waited)),
                    );
                    let permit_id = PermitId {
                        resource: req.resource,
                        partition: req.partition,
                        seq,
                        tag,
                    }
                    .encode();
                    return Ok(AcquireOutcome {
                        def,
                        result: Ok(GrantInfo {
                            permit_id,
                            lease_expires_at: SystemTime::UNIX_EPOCH
                                + Duration::from_micros(expires_us),
                        }),
                        waited,
                        remaining,
                    });
                }
                Try::Never => {
                    drop(turn);
                    self.forget_turnstile(&keys.home);
                    return Err(never(&def, &cost));
                }
                Try::Full { limit, live } => {
                    drop(turn);
                    self.forget_turnstile(&keys.home);
                    return Err(PermitError::Exhausted {
                        cap: "max_partitions_per_resource",
                        limit,
                        what: format!(
                            "{live} live partitions of resource {:?} (cluster-wide)",
                            crate::auth::tenant::split(req.resource).1
                        ),
                    });
                }
                Try::Denied {
                    reason,
                    wait,
                    remaining,
                } => {
                    let deny = |reason| {
                        self.registry.count(req.resource, Err(reason));
                        Ok(AcquireOutcome {
                            def: Arc::clone(&def),
                            result: Err(Denial {
                                reason,
                                retry_after: wait,
                            }),
                            waited,
                            remaining: remaining.clone(),
                        })
                    };
                    if now >= deadline {
                        let timed_out = turn.is_some();
                        drop(turn);
                        self.forget_turnstile(&keys.home);
                        return deny(if timed_out {
                            DenialReason::QueueTimeout
                        } else {
                            reason
                        });
                    }
                    if turn.is_none() {
                        let t = self.turnstile(&keys.home);
                        let max_queue = usize::try_from(def.max_queue).unwrap_or(usize::MAX);
                        // Held by this map and this caller: the rest are queued callers.
                        if Arc::strong_count(&t).saturating_sub(2) >= max_queue {
                            return deny(DenialReason::QueueFull);
                        }
                        if waiting.is_none() {
                            match self.registry.waiter_slot(req.resource) {
                                Ok(w) => waiting = Some(w),
                                Err(e) => {
                                    drop(t);
                                    self.forget_turnstile(&keys.home);
                                    return Err(e);
                                }
                            }
                        }
                        match tokio::time::timeout_at(deadline, t.lock_owned()).await {
                            Ok(g) => {
                                turn = Some(g);
                                // At the head of this replica's queue: try again at once.
                                continue;
                            }
                            Err(_) => {
                                self.forget_turnstile(&keys.home);
                                return deny(DenialReason::QueueTimeout);
                            }
                        }
                    }
                    let nap = wait.clamp(Duration::from_millis(1), RECHECK);
                    tokio::select! {
                        () = &mut notified => {}
                        () = tokio::time::sleep_until((now + nap).min(deadline)) => {}
                    }
                }
            }
        }
    }

    fn turnstile(&self, home: &str) -> Arc<tokio::sync::Mutex<()>> {
        if let Some(t) = self.turnstiles.get(home) {
            return Arc::clone(&t);
        }
        Arc::clone(&self.turnstiles.entry(home.to_owned()).or_default())
    }

    /// Drop a bucket's queue once nobody is in it (memory stays bounded by live queues).
    fn forget_turnstile(&self, home: &str) {
        self.turnstiles
            .remove_if(home, |_, t| Arc::strong_count(t) == 1);
    }

    /// Redis failed: fail closed, or grant from this replica's share.
    async fn unreachable(
        &self,
        def: &ResourceDef,
        req: AcquireRequest<'_>,
        e: ClusterError,
    ) -> Result<AcquireOutcome, PermitError> {
        match self.policy(def) {
            // Only a connection failure means Redis is away: an error Redis itself answered
            // (OOM, WRONGTYPE, a script error) while it is up must not hand out local grants
            // on top of the shared ones.
            FailurePolicy::LocalFallback if e.is_connection() => {
                tracing::debug!(error = %e, "redis unreachable: local fallback");
                self.fallback.acquire(req).await
            }
            FailurePolicy::LocalFallback => {
                tracing::warn!(error = %e, "redis answered an error: no local fallback");
                Err(e.into())
            }
            FailurePolicy::FailClosed => Err(e.into()),
        }
    }
}
