// Desktop notifications (the browser's Notification API): asked for once, when the agent first
// goes Active or logs in Active, as a reply to their click (browsers ignore it otherwise).
const ASKED = 'chatdesk.notifications-asked';

export function askOnce() {
  if (!('Notification' in window) || Notification.permission !== 'default') return;
  if (localStorage.getItem(ASKED)) return;
  localStorage.setItem(ASKED, '1');
  Notification.requestPermission();
}

export function notifyOffer(chat, open) {
  if (!('Notification' in window) || Notification.permission !== 'granted') return;
  const notification = new Notification(`New chat: ${chat.contact_name}`, {
    body: chat.last_message_preview || 'A customer is waiting for an answer.',
    tag: `chatdesk-offer-${chat.id}`, // one per offer, even if it is told twice
  });
  notification.onclick = () => {
    window.focus();
    open(chat.id);
    notification.close();
  };
}
