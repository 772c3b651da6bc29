//! Per-box enrolment: who may bring a box into the network.
//!
//! A shared join token cannot tell box owners apart: whoever holds it mints as
//! many identities as they like, and banning one key bans nothing but that key.
//! Enrolment instead binds every box to an *owner* the operator named. The
//! operator issues an invitation for an owner (`dandelion invite`); a box
//! presents its one-time code once, and from then on its key is enrolled under
//! that owner. The operator can cap an owner's boxes and revoke an owner: their
//! boxes leave and their keys are refused for good, whatever they present.
//!
//! Only the SHA-256 of a code is stored, so a copy of the store does not admit
//! anyone. Redemption is claimed by deleting the invitation, which exactly one
//! of two concurrent redeemers wins on either backend. Two redemptions of two
//! different codes of one owner at the same instant may both pass the cap (the
//! count and the claim are not one transaction); the cap is a bound on an
//! owner's boxes, not an exact quota, and one box over it is noticed in the
//! owner list.
//!
//! [`judge`] is the decision, a plain function; [`Enrolment`] is its store.

use std::sync::Arc;
use std::time::Duration;

use dandelion_core::store::{Batch, Keys, Store, StoreError};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// How every invitation code starts, so a box's credential says what it is.
pub const CODE_PREFIX: &str = "dinv-";

/// Longest owner name: it ends up in key names and log lines.
pub const MAX_OWNER_LEN: usize = 64;

/// Longest validity an invitation may be given: an invitation is a bearer
/// secret, and one that lies around for a year is one that leaks.
pub const MAX_VALIDITY: Duration = Duration::from_secs(90 * 24 * 3600);

/// One unredeemed invitation, stored under the digest of its code.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Invitation {
    pub owner: String,
    pub created: f64,
    pub expires: f64,
}

/// What the entrance knows of one owner.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Owner {
    pub created: f64,
    /// This owner's cap, overriding `entrance.max_boxes_per_owner`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_boxes: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked: Option<Revocation>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Revocation {
    pub at: f64,
    pub reason: String,
}

/// One enrolled box: whose it is and since when.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Enrolled {
    pub owner: String,
    pub at: f64,
}

/// One owner as `GET /api/owners` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OwnerView {
    pub owner: String,
    pub created: f64,
    /// The cap in force (0: none).
    pub max_boxes: u32,
    pub boxes: Vec<String>,
    pub pending_invitations: usize,
    pub revoked: Option<Revocation>,
}

/// Why an invitation admits no box.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum NotAdmitted {
    #[error("the invitation is unknown or was already used; ask the operator for a new one")]
    Unknown,
    #[error("the invitation expired; ask the operator for a new one")]
    Expired,
    #[error("owner `{owner}` was revoked: {reason}")]
    OwnerRevoked { owner: String, reason: String },
    #[error("owner `{owner}` already has {boxes} boxes, the most allowed ({cap})")]
    Full { owner: String, boxes: u64, cap: u32 },
}

impl NotAdmitted {
    /// The refusal code a box and the refusal counters see.
    pub fn code(&self) -> &'static str {
        match self {
            NotAdmitted::Unknown => "invitation_unknown",
            NotAdmitted::Expired => "invitation_expired",
            NotAdmitted::OwnerRevoked { .. } => "revoked",
            NotAdmitted::Full { .. } => "owner_full",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EnrolError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The operator asked for something that cannot be: a bad owner name, an
    /// unknown or revoked owner.
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    NotAdmitted(#[from] NotAdmitted),
    #[error("cannot make a random code: {0}")]
    Random(String),
}

/// Whether `invitation` admits one more box of `owner` now; `boxes` is how many
/// the owner has, `default_cap` the configured cap (0: none).
pub fn judge(
    invitation: Option<&Invitation>,
    owner: Option<&Owner>,
    boxes: u64,
    default_cap: u32,
    now: f64,
) -> Result<(), NotAdmitted> {
    let invitation = invitation.ok_or(NotAdmitted::Unknown)?;
    if invitation.expires <= now {
        return Err(NotAdmitted::Expired);
    }
    if let Some(r) = owner.and_then(|o| o.revoked.as_ref()) {
        return Err(NotAdmitted::OwnerRevoked {
            owner: invitation.owner.clone(),
            reason: r.reason.clone(),
        });
    }
    let cap = cap_of(owner, default_cap);
    if cap > 0 && boxes >= u64::from(cap) {
        return Err(NotAdmitted::Full {
            owner: invitation.owner.clone(),
            boxes,
            cap,
        });
    }
    Ok(())
}

fn cap_of(owner: Option<&Owner>, default_cap: u32) -> u32 {
    owner.and_then(|o| o.max_boxes).unwrap_or(default_cap)
}

/// Owner names: letters, digits and `._@+-`, as an e-mail address or a handle
/// would be, so they are safe in key names, logs and URLs.
pub fn valid_owner(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_OWNER_LEN {
        return Err(format!(
            "an owner name has 1 to {MAX_OWNER_LEN} characters, not {}",
            name.len()
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "._@+-".contains(*c)))
    {
        return Err(format!(
            "`{c}` is not allowed in an owner name (letters, digits and ._@+- are)"
        ));
    }
    Ok(())
}

/// Whether a box's credential is an invitation code rather than a join token.
pub fn is_code(credential: &str) -> bool {
    credential.starts_with(CODE_PREFIX)
}

/// The stored name of a code.
pub fn digest(code: &str) -> String {
    format!("{:x}", Sha256::digest(code.trim().as_bytes()))
}

/// Where a box stands before any credential is looked at.
#[derive(Debug, Clone, PartialEq)]
pub enum Standing {
    /// Its owner was revoked: refused whatever it presents.
    Revoked {
        owner: String,
        reason: String,
    },
    Enrolled {
        owner: String,
    },
    Unknown,
}

/// An invitation judged good, not yet claimed.
#[derive(Debug, Clone)]
pub struct Claim {
    digest: String,
    pub owner: String,
}

/// Enrolment records in the store, under the registry's namespace.
#[derive(Debug, Clone)]
pub struct Enrolment {
    store: Arc<dyn Store>,
    keys: Keys,
}

fn parse<T: serde::de::DeserializeOwned>(json: Option<String>) -> Option<T> {
    // A record that does not parse was not written by this code: treated as
    // absent rather than failing every admission.
    json.and_then(|j| serde_json::from_str(&j).ok())
}

fn json(value: &impl Serialize) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

impl Enrolment {
    pub fn new(store: Arc<dyn Store>, namespace: &str) -> Enrolment {
        Enrolment {
            store,
            keys: Keys::new(namespace),
        }
    }

    async fn owner(&self, name: &str) -> Result<Option<Owner>, StoreError> {
        Ok(parse(self.store.hget(&self.keys.owners(), name).await?))
    }

    pub async fn standing(&self, box_id: &str) -> Result<Standing, StoreError> {
        let enrolled: Option<Enrolled> =
            parse(self.store.hget(&self.keys.enrolled(), box_id).await?);
        let revoked = self
            .store
            .sismember(&self.keys.revoked_boxes(), box_id)
            .await?;
        let Some(enrolled) = enrolled else {
            return Ok(if revoked {
                Standing::Revoked {
                    owner: String::new(),
                    reason: "revoked".into(),
                }
            } else {
                Standing::Unknown
            });
        };
        // The owner's record decides too: a box enrolled while its owner was
        // being revoked is not in the revoked set, but its owner is revoked.
        let owner = self.owner(&enrolled.owner).await?;
        match owner.and_then(|o| o.revoked) {
            Some(r) => Ok(Standing::Revoked {
                owner: enrolled.owner,
                reason: r.reason,
            }),
            None if revoked => Ok(Standing::Revoked {
                owner: enrolled.owner,
                reason: "revoked".into(),
            }),
            None => Ok(Standing::Enrolled {
                owner: enrolled.owner,
            }),
        }
    }

    /// Issues an invitation for `owner`, valid for `validity`; returns its code,
    /// which is shown once and never stored.
    pub async fn invite(
        &self,
        owner: &str,
        validity: Duration,
        now: f64,
    ) -> Result<(String, Invitation), EnrolError> {
        valid_owner(owner).map_err(EnrolError::Invalid)?;
        if validity.is_zero() || validity > MAX_VALIDITY {
            return Err(EnrolError::Invalid(format!(
                "an invitation is valid for 1 s to {} days",
                MAX_VALIDITY.as_secs() / 86_400
            )));
        }
        let record = self.owner(owner).await?;
        if let Some(r) = record.as_ref().and_then(|o| o.revoked.as_ref()) {
            return Err(EnrolError::Invalid(format!(
                "owner `{owner}` was revoked ({}); invitations for them would be refused",
                r.reason
            )));
        }
        self.prune_invitations(now).await?;
        let code = format!(
            "{CODE_PREFIX}{}",
            dandelion_core::secrets::random_hex(16)
                .map_err(|e| EnrolError::Random(e.to_string()))?
        );
        let invitation = Invitation {
            owner: owner.to_owned(),
            created: now,
            expires: now + validity.as_secs_f64(),
        };
        let mut batch = Batch::new();
        batch.hset(
            &self.keys.invitations(),
            &[(&digest(&code), &json(&invitation))],
        );
        if record.is_none() {
            let new = Owner {
                created: now,
                ..Owner::default()
            };
            batch.hset(&self.keys.owners(), &[(owner, &json(&new))]);
        }
        self.store.apply(&batch).await?;
        Ok((code, invitation))
    }

    /// Forgets invitations that expired unredeemed.
    async fn prune_invitations(&self, now: f64) -> Result<(), StoreError> {
        let all = self.store.hgetall(&self.keys.invitations()).await?;
        let expired: Vec<&str> = all
            .iter()
            .filter(|(_, j)| {
                parse::<Invitation>(Some((*j).clone())).is_none_or(|i| i.expires <= now)
            })
            .map(|(d, _)| d.as_str())
            .collect();
        self.store
            .hdel(&self.keys.invitations(), &expired)
            .await
            .map(|_| ())
    }

    /// Judges `code` without using it up.
    pub async fn prepare(
        &self,
        code: &str,
        default_cap: u32,
        now: f64,
    ) -> Result<Claim, EnrolError> {
        let digest = digest(code);
        let invitation: Option<Invitation> =
            parse(self.store.hget(&self.keys.invitations(), &digest).await?);
        let (owner, boxes) = match &invitation {
            Some(i) => (
                self.owner(&i.owner).await?,
                self.store.scard(&self.keys.owner_boxes(&i.owner)).await?,
            ),
            None => (None, 0),
        };
        judge(invitation.as_ref(), owner.as_ref(), boxes, default_cap, now)?;
        let owner = invitation.map(|i| i.owner).unwrap_or_default();
        Ok(Claim { digest, owner })
    }

    /// Uses up a prepared invitation for `box_id`, enrolling it.
    pub async fn claim(&self, claim: Claim, box_id: &str, now: f64) -> Result<String, EnrolError> {
        let won = self
            .store
            .hdel(&self.keys.invitations(), &[&claim.digest])
            .await?;
        if won == 0 {
            return Err(NotAdmitted::Unknown.into());
        }
        let enrolled = Enrolled {
            owner: claim.owner.clone(),
            at: now,
        };
        let mut batch = Batch::new();
        batch
            .hset(&self.keys.enrolled(), &[(box_id, &json(&enrolled))])
            .sadd(&self.keys.owner_boxes(&claim.owner), &[box_id])
            .hset(&self.keys.redeemed(), &[(&claim.digest, box_id)]);
        self.store.apply(&batch).await?;
        Ok(claim.owner)
    }

    /// Whether `code` was redeemed by a box still in good standing: what a
    /// box's uplink test presents instead of a join token.
    pub async fn redeemed_by_member(&self, code: &str) -> Result<bool, StoreError> {
        let Some(box_id) = self
            .store
            .hget(&self.keys.redeemed(), &digest(code))
            .await?
        else {
            return Ok(false);
        };
        Ok(matches!(
            self.standing(&box_id).await?,
            Standing::Enrolled { .. }
        ))
    }

    pub async fn owners(&self, default_cap: u32, now: f64) -> Result<Vec<OwnerView>, StoreError> {
        let owners = self.store.hgetall(&self.keys.owners()).await?;
        let invitations = self.store.hgetall(&self.keys.invitations()).await?;
        let mut views = Vec::with_capacity(owners.len());
        for (name, record) in owners {
            let record: Owner = parse(Some(record)).unwrap_or_default();
            let boxes = self.store.smembers(&self.keys.owner_boxes(&name)).await?;
            let pending_invitations = invitations
                .values()
                .filter_map(|j| parse::<Invitation>(Some(j.clone())))
                .filter(|i| i.owner == name && i.expires > now)
                .count();
            views.push(OwnerView {
                max_boxes: cap_of(Some(&record), default_cap),
                owner: name,
                created: record.created,
                boxes: boxes.into_iter().collect(),
                pending_invitations,
                revoked: record.revoked,
            });
        }
        Ok(views)
    }

    /// Revokes `owner`: their boxes are refused from now on and their pending
    /// invitations void. Returns the boxes, for the caller to remove from the
    /// registry.
    pub async fn revoke(
        &self,
        owner: &str,
        reason: &str,
        now: f64,
    ) -> Result<Vec<String>, EnrolError> {
        let mut record = self
            .owner(owner)
            .await?
            .ok_or_else(|| EnrolError::Invalid(format!("no owner `{owner}`")))?;
        record.revoked = Some(Revocation {
            at: now,
            reason: reason.to_owned(),
        });
        let boxes: Vec<String> = self
            .store
            .smembers(&self.keys.owner_boxes(owner))
            .await?
            .into_iter()
            .collect();
        let invitations = self.store.hgetall(&self.keys.invitations()).await?;
        let voided: Vec<&str> = invitations
            .iter()
            .filter(|(_, j)| {
                parse::<Invitation>(Some((*j).clone())).is_some_and(|i| i.owner == owner)
            })
            .map(|(d, _)| d.as_str())
            .collect();
        let ids: Vec<&str> = boxes.iter().map(String::as_str).collect();
        let mut batch = Batch::new();
        batch
            .hset(&self.keys.owners(), &[(owner, &json(&record))])
            .sadd(&self.keys.revoked_boxes(), &ids)
            .hdel(&self.keys.invitations(), &voided);
        self.store.apply(&batch).await?;
        Ok(boxes)
    }

    /// Sets `owner`'s cap (`None`: back to the configured one); an owner not
    /// yet known is created, so a cap can be set before the first invitation.
    pub async fn set_cap(&self, owner: &str, cap: Option<u32>, now: f64) -> Result<(), EnrolError> {
        valid_owner(owner).map_err(EnrolError::Invalid)?;
        let mut record = self.owner(owner).await?.unwrap_or(Owner {
            created: now,
            ..Owner::default()
        });
        record.max_boxes = cap;
        self.store
            .hset(&self.keys.owners(), &[(owner, &json(&record))])
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invitation(expires: f64) -> Invitation {
        Invitation {
            owner: "alice".into(),
            created: 0.0,
            expires,
        }
    }

    #[test]
    fn an_invitation_admits_until_it_expires_its_owner_is_revoked_or_full() {
        let good = invitation(100.0);
        assert_eq!(judge(Some(&good), None, 0, 4, 50.0), Ok(()));
        assert_eq!(judge(None, None, 0, 4, 50.0), Err(NotAdmitted::Unknown));
        assert_eq!(
            judge(Some(&good), None, 0, 4, 100.0),
            Err(NotAdmitted::Expired)
        );
        let revoked = Owner {
            revoked: Some(Revocation {
                at: 1.0,
                reason: "spam".into(),
            }),
            ..Owner::default()
        };
        assert!(matches!(
            judge(Some(&good), Some(&revoked), 0, 4, 50.0),
            Err(NotAdmitted::OwnerRevoked { .. })
        ));
        assert!(matches!(
            judge(Some(&good), None, 4, 4, 50.0),
            Err(NotAdmitted::Full { cap: 4, .. })
        ));
        // An owner's own cap wins over the configured one, and 0 means none.
        let generous = Owner {
            max_boxes: Some(10),
            ..Owner::default()
        };
        assert_eq!(judge(Some(&good), Some(&generous), 4, 4, 50.0), Ok(()));
        assert_eq!(judge(Some(&good), None, 1000, 0, 50.0), Ok(()));
    }

    #[test]
    fn owner_names_are_safe_in_keys_and_logs() {
        assert!(valid_owner("alice@example.org").is_ok());
        assert!(valid_owner("bob-2").is_ok());
        assert!(valid_owner("").is_err());
        assert!(valid_owner("a:b").is_err());
        assert!(valid_owner("a b").is_err());
        assert!(valid_owner("{x}").is_err());
        assert!(valid_owner(&"x".repeat(65)).is_err());
    }

    #[test]
    fn only_the_digest_of_a_code_is_kept() {
        let d = digest("dinv-00");
        assert_eq!(d.len(), 64);
        assert!(!d.contains("dinv"));
        assert_eq!(d, digest(" dinv-00\n"));
        assert!(is_code("dinv-abc"));
        assert!(!is_code("0123abcd"));
    }
}
