//! The console's message catalog. Every string a page shows is a [`Msg`], and each `Msg` has its text
//! in every [`Lang`]: the catalog macro takes both, so a message missing a language does not compile.
//! A person picks their language (a cookie); until they do, `Accept-Language` decides.

/// A language the console speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    En,
    Es,
}

impl Lang {
    pub const ALL: [Lang; 2] = [Lang::En, Lang::Es];

    /// The BCP 47 tag, for `<html lang>` and the language cookie.
    pub fn tag(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::Es => "es",
        }
    }

    /// The language's own name, for the language switch.
    pub fn name(self) -> &'static str {
        match self {
            Lang::En => "English",
            Lang::Es => "Español",
        }
    }

    pub fn parse(tag: &str) -> Option<Lang> {
        let primary = tag.trim().split(['-', '_']).next().unwrap_or_default().to_ascii_lowercase();
        match primary.as_str() {
            "en" => Some(Lang::En),
            "es" => Some(Lang::Es),
            _ => None,
        }
    }

    /// The first language of an `Accept-Language` header the console speaks (by quality, then order),
    /// else English.
    pub fn from_accept_language(header: &str) -> Lang {
        let mut offered: Vec<(f32, usize, Lang)> = header
            .split(',')
            .enumerate()
            .filter_map(|(i, part)| {
                let mut pieces = part.split(';');
                let lang = Lang::parse(pieces.next()?)?;
                let q = pieces
                    .find_map(|p| p.trim().strip_prefix("q="))
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .unwrap_or(1.0);
                (q > 0.0).then_some((q, i, lang))
            })
            .collect();
        offered.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        offered.first().map_or(Lang::En, |o| o.2)
    }
}

macro_rules! catalog {
    ($($key:ident => $en:literal, $es:literal;)*) => {
        /// A string the console shows.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Msg { $($key,)* }

        impl Msg {
            /// Every message, for the catalog's own checks.
            pub const ALL: &'static [Msg] = &[$(Msg::$key,)*];

            /// The message in `lang`.
            pub fn text(self, lang: Lang) -> &'static str {
                match (self, lang) {
                    $((Msg::$key, Lang::En) => $en, (Msg::$key, Lang::Es) => $es,)*
                }
            }
        }
    };
}

catalog! {
    Haven => "Haven", "Haven";
    SkipToContent => "Skip to content", "Saltar al contenido";
    SignIn => "Sign in", "Iniciar sesión";
    SignOut => "Sign out", "Cerrar sesión";
    Name => "Name", "Nombre";
    Password => "Password", "Contraseña";
    SignInIntro => "Sign in with the name and password your administrator gave you.", "Inicie sesión con el nombre y la contraseña que le dio su administrador.";
    WrongNameOrPassword => "Wrong name or password.", "Nombre o contraseña incorrectos.";
    PersonDisabled => "This person is disabled on this node. Ask your administrator.", "Esta persona está desactivada en este nodo. Pregunte a su administrador.";
    TooManyForName => "Too many failed sign-ins for this name. Wait until the time below, then try again; your administrator can also reset your password.", "Demasiados intentos fallidos para este nombre. Espere hasta la hora indicada y vuelva a intentarlo; su administrador también puede restablecer su contraseña.";
    TooManyForAddress => "Too many failed sign-ins from your network address. Wait until the time below, then try again.", "Demasiados intentos fallidos desde su dirección de red. Espere hasta la hora indicada y vuelva a intentarlo.";
    TryAgainAfter => "Try again after", "Vuelva a intentarlo después de las";
    SessionEnded => "Your session has ended. Sign in again.", "Su sesión ha terminado. Inicie sesión de nuevo.";
    Language => "Language", "Idioma";
    Change => "Change", "Cambiar";
    Inbox => "Inbox", "Bandeja de entrada";
    Sent => "Sent", "Enviados";
    SignedInAs => "Signed in as", "Sesión iniciada como";
    InboxIntro => "What other organizations sent to yours, newest first. The list shows no survivor data; open an item to see it, which is recorded.", "Lo que otras organizaciones enviaron a la suya, lo más reciente primero. La lista no muestra datos de sobrevivientes; abra un elemento para verlos, lo cual queda registrado.";
    Kind => "Kind", "Tipo";
    AllKinds => "All kinds", "Todos los tipos";
    Referral => "Referral", "Derivación";
    Alert => "Alert", "Alerta";
    Filter => "Filter", "Filtrar";
    Received => "Received", "Recibido";
    From => "From", "De";
    Purpose => "Purpose", "Finalidad";
    State => "State", "Estado";
    Open => "Open", "Abrir";
    NothingHere => "Nothing here yet.", "Todavía no hay nada aquí.";
    LiveUpdates => "This list updates by itself when something arrives.", "Esta lista se actualiza sola cuando llega algo.";
    DataWithdrawn => "Data withdrawn: the survivor's consent no longer covers it.", "Datos retirados: el consentimiento de la persona sobreviviente ya no los cubre.";
    ConsentWithdrawnNotice => "Consent withdrawn", "Consentimiento retirado";
    StatusNotice => "Status change", "Cambio de estado";
    DeliveryNotice => "Delivery notice", "Aviso de entrega";
    Message => "Message", "Mensaje";
    Subject => "Subject (pseudonym)", "Persona (seudónimo)";
    Fields => "Fields", "Campos";
    Withheld => "Withheld from your organization", "Retenidos a su organización";
    ViewRecorded => "Opening this page was recorded in your node's access log.", "La apertura de esta página quedó registrada en el registro de accesos de su nodo.";
    Accept => "Accept", "Aceptar";
    Decline => "Decline", "Rechazar";
    Close => "Close", "Cerrar";
    ReasonCode => "Reason or outcome code", "Código de motivo o resultado";
    Withdraw => "Withdraw", "Retirar";
    Recipients => "Recipients", "Destinatarios";
    Recipient => "Recipient", "Destinatario";
    StatusChangedBy => "Changed by", "Cambiado por";
    When => "When", "Cuándo";
    PendingAtNode => "Waiting at this node: the gateway has not taken it yet, and the node keeps retrying.", "En espera en este nodo: la pasarela aún no lo ha aceptado y el nodo sigue reintentando.";
    Forbidden => "Your role may not do this.", "Su rol no puede hacer esto.";
    NotFound => "Not found.", "No encontrado.";
    BadRequest => "This request could not be used.", "No se pudo usar esta solicitud.";
    Unavailable => "The gateway could not be reached. Nothing was lost; try again shortly.", "No se pudo contactar con la pasarela. No se perdió nada; vuelva a intentarlo en breve.";
    ServerError => "Something went wrong at the node. The error is in the node's log.", "Algo falló en el nodo. El error está en el registro del nodo.";
    RefusedCrossSite => "This form did not come from this console, so it was refused. Reload the page and try again.", "Este formulario no vino de esta consola, así que fue rechazado. Recargue la página y vuelva a intentarlo.";
    BackToInbox => "Back to the inbox", "Volver a la bandeja de entrada";
    NoMessagesSent => "Nothing sent yet.", "Todavía no se ha enviado nada.";
    Created => "Created", "Creado";
    Delivery => "Delivery", "Entrega";
    SecondFactor => "Second step: a code", "Segundo paso: un código";
    CodeIntro => "Type the 6-digit code your authenticator app shows for Haven, or one of your recovery codes.", "Escriba el código de 6 dígitos que su aplicación de autenticación muestra para Haven, o uno de sus códigos de recuperación.";
    Code => "Code", "Código";
    WrongCode => "That code is not right, or was already used. Type the code your app shows now.", "Ese código no es correcto o ya se usó. Escriba el código que su aplicación muestra ahora.";
    Continue => "Continue", "Continuar";
    EnrollTitle => "Set up your second step", "Configure su segundo paso";
    EnrollIntro => "Your role needs a second step at sign-in. Scan this code with an authenticator app (or type the key below into it), then type the 6-digit code it shows.", "Su rol necesita un segundo paso al iniciar sesión. Escanee este código con una aplicación de autenticación (o escriba en ella la clave de abajo) y luego escriba el código de 6 dígitos que muestra.";
    QrAlt => "QR code holding your second-step key", "Código QR con su clave del segundo paso";
    Key => "Key", "Clave";
    RecoveryTitle => "Your recovery codes", "Sus códigos de recuperación";
    RecoveryIntro => "Each of these codes signs you in once if you lose your phone. Print them or write them down now, and keep them somewhere safe: they are not shown again.", "Cada uno de estos códigos le permite iniciar sesión una vez si pierde su teléfono. Imprímalos o anótelos ahora y guárdelos en un lugar seguro: no se vuelven a mostrar.";
    People => "People", "Personas";
    Role => "Role", "Rol";
    Disabled => "Disabled", "Desactivada";
    Enabled => "Enabled", "Activa";
    Disable => "Disable", "Desactivar";
    Enable => "Enable", "Activar";
    ChangeRole => "Change role", "Cambiar rol";
    NewPassword => "New password", "Nueva contraseña";
    ResetPassword => "Set password", "Establecer contraseña";
    AddPerson => "Add a person", "Añadir una persona";
    Add => "Add", "Añadir";
    PasswordHint => "At least 12 characters; a few words are easiest to remember.", "Al menos 12 caracteres; unas pocas palabras son lo más fácil de recordar.";
    Done => "Done.", "Hecho.";
    Health => "Node health", "Estado del nodo";
    StreamToGateway => "Delivery stream to the gateway", "Canal de entrega con la pasarela";
    Connected => "connected", "conectado";
    NotConnected => "not connected", "no conectado";
    LastArrival => "Last arrival", "Última llegada";
    PendingSends => "Sends waiting at this node", "Envíos en espera en este nodo";
    BundleVersion => "Policy bundle (newest answer)", "Paquete de políticas (respuesta más reciente)";
    Certificates => "Certificates", "Certificados";
    Expires => "Expires", "Vence";
    Never => "never", "nunca";
    Verification => "Verification", "Verificación";
    NewestCheckpoint => "Newest signed checkpoint", "Punto de control firmado más reciente";
    TreeSize => "Entries", "Entradas";
    RootHash => "Root hash", "Hash raíz";
    SignedAt => "Signed", "Firmado";
    WitnessState => "This node's witness", "Testigo de este nodo";
    LastChecked => "Last checked", "Última comprobación";
    WitnessOk => "consistent with the last checkpoint it kept", "coherente con el último punto de control que guardó";
    NewReferral => "New referral", "Nueva derivación";
    NewReferralIntro => "Choose the consent the referral relies on, who receives it and why, and fill in what the recipients need. Preview shows what each recipient will receive before anything is sent.", "Elija el consentimiento en el que se basa la derivación, quién la recibe y para qué, y complete lo que necesitan los destinatarios. La vista previa muestra lo que recibirá cada destinatario antes de enviar nada.";
    Consent => "Consent", "Consentimiento";
    NoConsents => "This organization has recorded no consent yet; record one first.", "Esta organización aún no ha registrado ningún consentimiento; registre uno primero.";
    Choose => "Choose…", "Elija…";
    Required => "required", "obligatorio";
    Preview => "Preview", "Vista previa";
    Send => "Send", "Enviar";
    PreviewTitle => "What each recipient will see", "Lo que verá cada destinatario";
    WillReceive => "will receive", "recibirá";
    WithheldFields => "withheld", "retenidos";
    Denied => "denied", "denegado";
    NothingSentYet => "Nothing has been sent. Check the preview, then send.", "No se ha enviado nada. Revise la vista previa y luego envíe.";
    FixFields => "Some fields need fixing; nothing was sent.", "Algunos campos necesitan corrección; no se envió nada.";
    DenyNoRule => "No sharing rule lets your organization send this kind of message to them for this purpose.", "Ninguna regla de intercambio permite a su organización enviarles este tipo de mensaje para esta finalidad.";
    DenyConsentPurpose => "The survivor's consent does not cover this purpose.", "El consentimiento de la persona sobreviviente no cubre esta finalidad.";
    DenyConsentRecipient => "The survivor's consent does not cover this recipient.", "El consentimiento de la persona sobreviviente no cubre a este destinatario.";
    DenyConsentEnded => "The survivor's consent is no longer in force (expired, revoked, withdrawn or replaced).", "El consentimiento de la persona sobreviviente ya no está vigente (vencido, revocado, retirado o sustituido).";
    DenyConsentMissing => "This needs the survivor's consent, and none was given.", "Esto necesita el consentimiento de la persona sobreviviente, y no se indicó ninguno.";
    DenyRequiredField => "A field this recipient must receive is not covered, so nothing would be sent to them.", "Un campo que este destinatario debe recibir no está cubierto, así que no se le enviaría nada.";
    DenyQuota => "Too many messages are already waiting for this recipient; try again later.", "Ya hay demasiados mensajes esperando a este destinatario; inténtelo más tarde.";
    NewAlert => "New alert", "Nueva alerta";
    NewAlertIntro => "A safety alert is de-identified: it names no survivor and needs no consent. Preview shows who will receive which fields before anything is sent.", "Una alerta de seguridad no identifica a nadie: no nombra a ninguna persona sobreviviente y no necesita consentimiento. La vista previa muestra quién recibirá qué campos antes de enviar nada.";
    AllPermitted => "Every organization a sharing rule permits (for example every law-enforcement liaison)", "Todas las organizaciones que permite una regla (por ejemplo, todos los enlaces policiales)";
    Acknowledge => "Acknowledge", "Acusar recibo";
    Consents => "Consents", "Consentimientos";
    RecordConsent => "Record a consent", "Registrar un consentimiento";
    ConsentIntro => "First print the consent form in the survivor's language and have them sign it. Then type the SHA-256 of the signed form's scan and record the consent; the console then prints the survivor's copy.", "Primero imprima el formulario de consentimiento en el idioma de la persona sobreviviente y pídale que lo firme. Luego escriba el SHA-256 del escaneo del formulario firmado y registre el consentimiento; la consola imprime entonces la copia para la persona sobreviviente.";
    SubjectOptional => "Subject pseudonym (leave empty for a new survivor: the node makes one)", "Seudónimo de la persona (déjelo vacío para una persona nueva: el nodo crea uno)";
    Purposes => "Purposes", "Finalidades";
    RecipientTypes => "Kinds of organization that may receive", "Tipos de organización que pueden recibir";
    Labels => "What may be shared", "Qué se puede compartir";
    ValidUntil => "Valid until", "Válido hasta";
    Method => "How consent was given", "Cómo se dio el consentimiento";
    SurvivorLanguage => "The survivor's language", "El idioma de la persona sobreviviente";
    PrintForm => "Print the consent form", "Imprimir el formulario de consentimiento";
    Print => "Print", "Imprimir";
    EvidenceHash => "SHA-256 of the signed form's scan (64 hexadecimal characters)", "SHA-256 del escaneo del formulario firmado (64 caracteres hexadecimales)";
    Record => "Record the consent", "Registrar el consentimiento";
    Revoke => "Revoke", "Revocar";
    RevokeReason => "Why", "Motivo";
    SurvivorCopy => "Survivor's copy", "Copia para la persona sobreviviente";
    DiscreetCopy => "Discreet copy", "Copia discreta";
    CopyTitle => "Your consent to share information", "Su consentimiento para compartir información";
    CopyWhat => "What may be shared", "Qué se puede compartir";
    CopyWith => "With whom", "Con quién";
    CopyWhy => "For what", "Para qué";
    CopyUntil => "Until", "Hasta";
    CopyWithdraw => "You can withdraw this consent at any time, without giving a reason, by telling the organization that recorded it. Information already shared is then marked withdrawn and hidden from the people who received it.", "Puede retirar este consentimiento en cualquier momento, sin dar explicaciones, diciéndoselo a la organización que lo registró. La información ya compartida se marca entonces como retirada y se oculta a quienes la recibieron.";
    CopyReceipt => "Receipt fingerprint (SHA-256)", "Huella del recibo (SHA-256)";
    CopyDiscreetIntro => "Keep this paper. It shows the reference of an agreement you made, and nothing else.", "Guarde este papel. Muestra la referencia de un acuerdo que usted hizo, y nada más.";
    CopyCall => "Questions, or to change your mind, call", "Para preguntas o si cambia de opinión, llame al";
    Reference => "Reference", "Referencia";
    From2 => "From", "Desde";
    LabelIdentifying => "your name and date of birth", "su nombre y fecha de nacimiento";
    LabelContact => "how to reach you", "cómo comunicarse con usted";
    LabelSensitive => "health and personal history", "salud e historia personal";
    LabelOperational => "what you need from the service", "lo que necesita del servicio";
    LabelLocation => "where you are", "dónde se encuentra";
    Audit => "Audit trail", "Registro de auditoría";
    AuditIntro => "Search the audit trail: a date range is required. Open an entry to check its inclusion proof against the newest checkpoint this node's witness verified.", "Busque en el registro de auditoría: el rango de fechas es obligatorio. Abra una entrada para comprobar su prueba de inclusión frente al punto de control más reciente que verificó el testigo de este nodo.";
    FromDate => "From (date)", "Desde (fecha)";
    UntilDate => "Until (date, included)", "Hasta (fecha, incluida)";
    Organization => "Organization", "Organización";
    Action => "Action", "Acción";
    Search => "Search", "Buscar";
    NextPage => "Next page", "Página siguiente";
    Entry => "Entry", "Entrada";
    Proof => "Inclusion proof", "Prueba de inclusión";
    ProofVerified => "verified against the checkpoint of", "verificada frente al punto de control de";
    ProofFailed => "FAILED", "FALLIDA";
    ProofNotYet => "not yet covered by a checkpoint this node verified", "aún no cubierta por un punto de control que este nodo haya verificado";
    Export => "Download an export", "Descargar una exportación";
    ExportHow => "Check it offline, on any machine, with the gateway's signing certificate:", "Compruébela sin conexión, en cualquier máquina, con el certificado de firma de la pasarela:";
    Report => "Who has seen this survivor's data?", "¿Quién ha visto los datos de esta persona?";
    ReportIntro => "What your organization disclosed about a subject (by your pseudonym for them), to whom, when, which fields, and what became of each copy.", "Lo que su organización divulgó sobre una persona (por su seudónimo), a quién, cuándo, qué campos y qué pasó con cada copia.";
    Mine => "Only what is assigned to me", "Solo lo que tengo asignado";
    AssignedTo => "Assigned to", "Asignado a";
    Assign => "Assign", "Asignar";
    Nobody => "nobody", "nadie";
    Controller => "Organization that recorded the consent", "Organización que registró el consentimiento";
    ViewedBy => "viewed by", "visto por";
    AllStates => "All states", "Todos los estados";
    ResetSecondFactor => "Reset (lost phone)", "Restablecer (teléfono perdido)";
    AccessLog => "Who at your organization opened it", "Quién de su organización lo abrió";
    StSent => "sent", "enviado";
    StQueued => "queued at the gateway", "en cola en la pasarela";
    StReceived => "received", "recibido";
    StDelivered => "delivered", "entregado";
    StAccepted => "accepted", "aceptado";
    StDeclined => "declined", "rechazado";
    StClosed => "closed", "cerrado";
    StAcknowledged => "acknowledged", "recibo confirmado";
    StWithdrawn => "withdrawn", "retirado";
    StCancelled => "cancelled (consent ended)", "cancelado (terminó el consentimiento)";
    StExpired => "expired", "caducado";
    StRejected => "rejected by the recipient's node (integrity)", "rechazado por el nodo del destinatario (integridad)";
    DenyNoSealedCopy => "This node could not seal a copy for them: they have no sealing key in the key log, or this node's own decision refused them.", "Este nodo no pudo sellar una copia para ellos: no tienen clave de sellado en el registro de claves, o la decisión de este nodo los rechazó.";
    DenyManifest => "The gateway refused the sealed copy (it did not match the message or the policy). The error is in the node's log.", "La pasarela rechazó la copia sellada (no coincidía con el mensaje o la política). El error está en el registro del nodo.";
    StDenied => "denied", "denegado";
    StPending => "waiting at this node", "en espera en este nodo";
    StSubmitted => "taken by the gateway", "aceptado por la pasarela";
    StFailed => "refused by the gateway", "rechazado por la pasarela";
    Timeline => "History", "Historial";
    Step => "Step", "Paso";
    With => "With", "Con";
    By => "By", "Por";
    Reason => "Reason", "Motivo";
    Outcome => "Outcome", "Resultado";
    DeclineWith => "Decline, with a reason", "Rechazar, indicando el motivo";
    CloseWith => "Close, with the outcome", "Cerrar, indicando el resultado";
    RenewConsent => "Renew", "Renovar";
    SealingKeys => "Sealing keys", "Claves de sellado";
    SealingKeysIntro => "Senders seal data to this organization's published key. The private half never leaves this node; every node checks the public key log.", "Los remitentes sellan los datos con la clave publicada de esta organización. La mitad privada nunca sale de este nodo; cada nodo comprueba el registro público de claves.";
    KeyLogDownload => "Download the key log", "Descargar el registro de claves";
    NoSealingKey => "This organization has no sealing key yet.", "Esta organización aún no tiene clave de sellado.";
    MakeFirstKey => "Make the first sealing key", "Crear la primera clave de sellado";
    RotateKey => "Make a new sealing key (rotate)", "Crear una nueva clave de sellado (rotar)";
    RenewIntro => "A renewal is a new consent that replaces this one once recorded: print it, have the survivor sign it, and record it.", "Una renovación es un consentimiento nuevo que sustituye a este una vez registrado: imprímalo, pida a la persona que lo firme y regístrelo.";
    ScanUpload => "The signed form's scan (the node hashes it)", "El escaneo del formulario firmado (el nodo calcula su hash)";
    ScanNotKept => "The consent is recorded with the scan's hash, but the node could not keep the scan itself. The error is in the node's log.", "El consentimiento está registrado con el hash del escaneo, pero el nodo no pudo guardar el escaneo. El error está en el registro del nodo.";
    ScanDownload => "Download the signed form's scan", "Descargar el escaneo del formulario firmado";
}

/// A status or timeline step (`accepted`, `queued`, ...) in words, where the catalog has it.
pub fn status_words(status: &str) -> Option<Msg> {
    Some(match status {
        "sent" => Msg::StSent,
        "queued" => Msg::StQueued,
        "received" => Msg::StReceived,
        "delivered" => Msg::StDelivered,
        "accepted" => Msg::StAccepted,
        "declined" => Msg::StDeclined,
        "closed" => Msg::StClosed,
        "acknowledged" => Msg::StAcknowledged,
        "withdrawn" => Msg::StWithdrawn,
        "revoked" | "cancelled" => Msg::StCancelled,
        "expired" => Msg::StExpired,
        "rejected" => Msg::StRejected,
        "denied" => Msg::StDenied,
        "pending" => Msg::StPending,
        "submitted" => Msg::StSubmitted,
        "failed" => Msg::StFailed,
        _ => return None,
    })
}

/// A gateway refusal code in plain words, where the catalog has them.
pub fn deny_words(code: &str) -> Option<Msg> {
    Some(match code {
        "no_rule_matched" | "denied_by_rule" | "role_not_permitted" => Msg::DenyNoRule,
        "consent_purpose_not_covered" => Msg::DenyConsentPurpose,
        "consent_recipient_not_covered" | "consent_label_not_covered" => Msg::DenyConsentRecipient,
        "consent_expired"
        | "consent_revoked"
        | "consent_withdrawn"
        | "consent_superseded"
        | "consent_not_yet_valid" => Msg::DenyConsentEnded,
        "consent_missing" => Msg::DenyConsentMissing,
        "required_field_not_released" => Msg::DenyRequiredField,
        "quota_exceeded" => Msg::DenyQuota,
        "no_sealed_copy" | "unknown_sealing_key" => Msg::DenyNoSealedCopy,
        "manifest_exceeds_grant" | "manifest_mismatch" => Msg::DenyManifest,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_language_picks_the_best_language_the_console_speaks() {
        assert_eq!(Lang::from_accept_language("es-MX,es;q=0.9,en;q=0.8"), Lang::Es);
        assert_eq!(Lang::from_accept_language("fr-FR, en;q=0.5, es;q=0.7"), Lang::Es);
        assert_eq!(Lang::from_accept_language("de, fr"), Lang::En);
        assert_eq!(Lang::from_accept_language("es;q=0"), Lang::En);
        assert_eq!(Lang::from_accept_language(""), Lang::En);
    }

    #[test]
    fn every_message_has_text_in_every_language() {
        for m in Msg::ALL {
            for lang in Lang::ALL {
                assert!(!m.text(lang).trim().is_empty(), "{m:?} in {lang:?}");
            }
        }
    }
}
